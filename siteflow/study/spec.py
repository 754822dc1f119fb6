"""The study file (``siteflow-study STUDY.yaml``): which runs, over which seeds, compared with
which reference, on how many workers.

A study names its runs in two ways, which may be combined:

``configs``
    a list of experiment configs, each a name (``demo/fedavg``), a path, or a mapping
    ``{config, name, options}``: ``name`` is the run's name in the study (default: the
    config's file name, ``fedavg``), ``options`` replace some of its strategy's options.
``base`` and ``grid``
    one config and, per strategy, lists of option values: every combination is a run
    (``grid: {fedprox: {mu: [0.01, 0.1]}}`` gives ``fedprox_mu-0.01`` and ``fedprox_mu-0.1``).
    Options of the base's strategy that the grid's strategy also takes are kept (a fedavg
    base's ``rounds`` and ``local_epochs`` carry over to fedprox).

``overrides`` (optional) is merged over every run's config before its options, as a mapping
of config keys (``{common: {train: {epochs: 3}}}``): the same smaller budget, model or data
for every run of a study without copying its configs.

Every run is validated as a config is (:func:`~siteflow.config.parse_config`) before anything
trains; problems are one :class:`StudyError` naming the study key.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteflow.config import ConfigError, ExperimentConfig, parse_config, resolve_config_path
from siteflow.config.loading import deep_merge
from siteflow.config.reading import read_config_file
from siteflow.config.validation import schema, short_repr
from siteflow.core.errors import nearest
from siteflow.core.registry import STRATEGIES

KEYS = ("name", "output", "configs", "base", "grid", "overrides", "seeds", "reference", "workers", "engine", "resamples")
"""The keys of a study file."""

ENGINES = ("local", "ray")
"""Where the runs go: processes on this machine, or the tasks of a Ray cluster."""


class StudyError(ValueError):
    """A problem in a study file, located by its key (``grid.fedprox.mu``)."""

    def __init__(self, key: str, message: str, source: Path | None = None) -> None:
        self.key = key
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}{key}: {message}")


@dataclass(frozen=True)
class RunSpec:
    """One run of the study (repeated over the study's seeds).

    Attributes:
        name: its name in the study and its folder, ``<output>/runs/<name>/``.
        key: the study key that declares it (``configs[2]``, ``grid.fedprox``).
        raw: the experiment config it trains, as a mapping (written to ``configs/<name>.yaml``).
        config: ``raw`` validated.
    """

    name: str
    key: str
    raw: dict
    config: ExperimentConfig

    @property
    def strategy(self) -> str:
        return self.config.strategy.name


@dataclass(frozen=True)
class Study:
    """A validated study file.

    Attributes:
        name: the study's name (default: the file's stem).
        source: the study file.
        output: where everything goes (default ``exps/studies/<name>``).
        runs: the runs, in the file's order.
        seeds: every run is trained once per seed.
        reference: the run every other run is compared with.
        workers: runs at a time (None: one per device, see :mod:`siteflow.study.engines`).
        engine: ``local`` or ``ray``.
        resamples: bootstrap resamples of the paired comparisons (as ``siteflow-compare``).
    """

    name: str
    source: Path
    output: Path
    runs: tuple[RunSpec, ...]
    seeds: tuple[int, ...]
    reference: str
    workers: int | None
    engine: str
    resamples: int

    def run(self, name: str) -> RunSpec:
        return next(run for run in self.runs if run.name == name)


def load_study(path: Path) -> Study:
    """Read and validate the study file ``path`` (see the module docstring).

    Raises:
        StudyError: naming the file and the key: an unknown key, a run named twice, a grid
            option its strategy does not take, a run whose config does not validate, a
            reference that is not a run, runs that cannot be compared (different test sites
            or test data), bad seeds or worker counts.
        FileNotFoundError: the study file or a config it names does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {str(path)!r} does not exist")
    raw = read_config_file(path)
    try:
        return _study(raw, path)
    except StudyError as error:
        raise StudyError(error.key, str(error).split(": ", 1)[1], path) from None


def _study(raw: Any, path: Path) -> Study:
    if not isinstance(raw, dict):
        raise StudyError("<top level>", f"expected a mapping with keys {', '.join(KEYS)}")
    for key in raw:
        if key not in KEYS:
            raise StudyError(str(key), f"unknown key{nearest(str(key), KEYS)} (allowed: {', '.join(KEYS)})")
    name = _text(raw.get("name", path.stem), "name")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise StudyError("overrides", f"expected a mapping of config keys, like {{common: {{train: {{epochs: 3}}}}}}, got {short_repr(overrides)}")
    runs = _configs(raw.get("configs") or [], overrides)
    if "grid" in raw or "base" in raw:
        runs += _grid(raw.get("base"), raw.get("grid"), overrides)
    if not runs:
        raise StudyError("configs", "the study has no run: list configs, or give a base config and a grid")
    _check_unique(runs)
    reference = _text(raw.get("reference", runs[0].name), "reference")
    names = [run.name for run in runs]
    if reference not in names:
        raise StudyError("reference", f"{reference!r} is not a run of this study{nearest(reference, names)} (runs: {', '.join(names)})")
    ref = next(run for run in runs if run.name == reference)
    for run in runs:
        _check_comparable(run, ref)
    return Study(
        name=name,
        source=path.resolve(),
        output=Path(_text(raw.get("output", f"exps/studies/{name}"), "output")),
        runs=tuple(runs),
        seeds=_seeds(raw.get("seeds", [0])),
        reference=reference,
        workers=_positive(raw.get("workers"), "workers"),
        engine=_choice(raw.get("engine", "local"), ENGINES, "engine"),
        resamples=_positive(raw.get("resamples", 2000), "resamples"),
    )


def _configs(entries: Any, overrides: dict) -> list[RunSpec]:
    if not isinstance(entries, list):
        raise StudyError("configs", f"expected a list of configs, got {short_repr(entries)}")
    runs = []
    for index, entry in enumerate(entries):
        key = f"configs[{index}]"
        if isinstance(entry, str):
            entry = {"config": entry}
        if not isinstance(entry, dict) or "config" not in entry:
            raise StudyError(key, f"expected a config name or {{config, name, options}}, got {short_repr(entry)}")
        for item in entry:
            if item not in ("config", "name", "options"):
                raise StudyError(f"{key}.{item}", "unknown key (allowed: config, name, options)")
        raw, config_name, source = _read(entry["config"], f"{key}.config", overrides)
        name = _text(entry.get("name", Path(config_name).name), f"{key}.name")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise StudyError(f"{key}.options", f"expected a mapping of strategy options, got {short_repr(options)}")
        strategy = raw["common"]["strategy"]
        _check_options(strategy["name"], options, f"{key}.options")
        raw["common"]["strategy"] = {"name": strategy["name"], "kwargs": {**(strategy.get("kwargs") or {}), **options}}
        runs.append(_validated(name, key, raw, source, f"{key}.options", overrides))
    return runs


def _grid(base: Any, grid: Any, overrides: dict) -> list[RunSpec]:
    if base is None:
        raise StudyError("base", "a grid needs a base config: base: demo/fedavg")
    if not isinstance(grid, dict) or not grid:
        raise StudyError("grid", f"expected a mapping strategy -> {{option: [values]}}, got {short_repr(grid)}")
    raw, _, source = _read(base, "base", overrides)
    base_strategy = raw["common"]["strategy"]
    base_options = base_strategy.get("kwargs") or {}
    runs = []
    for strategy, sweep in grid.items():
        key = f"grid.{strategy}"
        sweep = sweep or {}
        if not isinstance(sweep, dict):
            raise StudyError(key, f"expected a mapping option -> [values], got {short_repr(sweep)}")
        for option, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise StudyError(f"{key}.{option}", f"expected a non-empty list of values, got {short_repr(values)}")
        options = _check_options(strategy, sweep, key)
        kept = {k: v for k, v in base_options.items() if k in options} if strategy != base_strategy["name"] else dict(base_options)
        swept = [option for option, values in sweep.items() if len(values) > 1]
        for values in itertools.product(*sweep.values()):
            chosen = dict(zip(sweep, values))
            name = "_".join([str(strategy)] + [f"{option}-{chosen[option]}" for option in swept])
            run_raw = copy.deepcopy(raw)
            run_raw["common"]["strategy"] = {"name": strategy, "kwargs": {**kept, **chosen}}
            runs.append(_validated(name, key, run_raw, source, key, overrides))
    return runs


def _check_options(strategy: Any, options: dict, key: str) -> set[str] | None:
    """The options strategy ``strategy`` takes (None: any); raise naming the first option of
    ``options`` it does not take."""
    if strategy not in STRATEGIES:
        raise StudyError(key, f"unknown strategy {strategy!r}{nearest(str(strategy), STRATEGIES.names())}")
    declared = schema(STRATEGIES.get(strategy))
    if declared.open:
        return None
    allowed = list(declared.options)
    for option in options:
        if option not in allowed:
            raise StudyError(
                f"{key}.{option}",
                f"not an option of strategy {strategy}{nearest(str(option), allowed)} (options: {', '.join(allowed) or 'none'})",
            )
    return set(allowed)


def _read(config: Any, key: str, overrides: dict) -> tuple[dict, str, Path]:
    """The raw mapping of the config named ``config`` with the study's ``overrides`` merged
    in, its name and its file."""
    if not isinstance(config, str):
        raise StudyError(key, f"expected a config name or path, got {short_repr(config)}")
    try:
        path, name = resolve_config_path(config)
    except FileNotFoundError as error:
        raise StudyError(key, str(error)) from None
    raw = read_config_file(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("common"), dict) or not isinstance(raw["common"].get("strategy"), dict):
        raise StudyError(key, f"{path} is not an experiment config (no common.strategy)")
    return deep_merge(raw, overrides), name, path


def _validated(name: str, key: str, raw: dict, source: Path, options_key: str, overrides: dict) -> RunSpec:
    """The run ``name``, its config validated; a config error is reported at the study key
    (an option's error at the option's own key, an override's at ``overrides.<key>``)."""
    try:
        config = parse_config(copy.deepcopy(raw), name=name, source=source)
    except ConfigError as error:
        prefix = "common.strategy.kwargs."
        if error.key_path.startswith(prefix) and not _overridden(overrides, error.key_path):
            raise StudyError(f"{options_key}.{error.key_path[len(prefix):]}", error.problem) from None
        if _overridden(overrides, error.key_path):
            raise StudyError(f"overrides.{error.key_path}", f"run {name!r}: {error.problem}") from None
        raise StudyError(key, f"run {name!r}: {error.key_path}: {error.problem}") from None
    return RunSpec(name, key, raw, config)


def _overridden(overrides: dict, key_path: str) -> bool:
    """Whether the config key ``key_path`` (``common.train.epochs``) is set by ``overrides``."""
    value: Any = overrides
    for part in key_path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _check_unique(runs: list[RunSpec]) -> None:
    seen: dict[str, RunSpec] = {}
    for run in runs:
        if run.name in seen:
            raise StudyError(
                run.key,
                f"the run name {run.name!r} is given twice (first at {seen[run.name].key}): "
                "give one of them another name (configs: {config, name})",
            )
        seen[run.name] = run


def _check_comparable(run: RunSpec, reference: RunSpec) -> None:
    """Refuse a run tested on other sites, or on other data, than the reference."""
    names = [site.task_name for site in run.config.sites]
    expected = [site.task_name for site in reference.config.sites]
    if names != expected:
        raise StudyError(
            run.key,
            f"run {run.name!r} cannot be compared with the reference {reference.name!r}: "
            f"it tests on the sites {names}, the reference on {expected}",
        )
    for site, other in zip(run.config.sites, reference.config.sites):
        if site.dataset != other.dataset:
            differing = sorted(k for k in site.dataset.kwargs.keys() | other.dataset.kwargs.keys()
                               if site.dataset.kwargs.get(k) != other.dataset.kwargs.get(k))
            what = "dataset" if site.dataset.name != other.dataset.name else ", ".join(f"dataset.kwargs.{k}" for k in differing)
            raise StudyError(
                run.key,
                f"run {run.name!r} cannot be compared with the reference {reference.name!r}: "
                f"site {site.task_name} has other test data ({what} differ)",
            )


def _seeds(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise StudyError("seeds", f"expected a list of non-negative integers like [0, 1, 2], got {short_repr(value)}")
    if len(set(value)) != len(value):
        raise StudyError("seeds", f"a seed is listed twice: {value}")
    return tuple(value)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or "/" in value and key in ("name", "reference"):
        raise StudyError(key, f"expected a name, got {short_repr(value)}")
    return value


def _positive(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StudyError(key, f"expected a positive integer, got {short_repr(value)}")
    return value


def _choice(value: Any, choices: tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise StudyError(key, f"expected one of {', '.join(choices)}, got {short_repr(value)}{nearest(str(value), choices)}")
    return value
