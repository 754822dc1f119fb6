"""Experiment configs: one YAML file describes every site of a multi-site study.

A config has three top-level keys:

``common``
    seed, workers, ``deterministic`` (bool), and ``dataset`` / ``model`` / ``strategy`` as ``{name, kwargs}``, plus
    ``train`` (epochs, batch size, precision, loss, optimizer, scheduler, ...).
``all_tasks_datasets``
    one partial dataset entry per site: ``{task_id, task_name, name?, kwargs}``, deep-merged
    over ``common.dataset``. Every listed site is a test site.
``current_tasks``
    ``task_ids``: the sites trained here, in order; ``task_confs``: per-site overrides of
    ``dataset`` and ``train`` plus ``checkpoint: {save, load, resume}``. All sites listed means
    a simulated run; one site means a deployed run at that site.

Per site, the merge order is: the site's ``task_confs`` entry over its dataset entry over
``common``. :func:`load_config` validates everything before any training and raises one
:class:`ConfigError` naming the file and the key path: the file itself (UTF-8, YAML, nesting,
aliases: :mod:`.reading`, :mod:`.structure`), key names, types, registry names, value ranges,
data folders, task ids, site names and checkpoint folders (:mod:`.folders`), optimizers and
schedulers (:mod:`.optim`), the inference window (:mod:`.inference`), and whatever the
strategy, the data, the task, the model and the losses refuse when they are built from the
config (:mod:`.components`).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteflow.config.components import build_strategy, check_buildable, check_one_model_fits, check_override, check_strategy_fits, data_spec
from siteflow.config.folders import check_distinct_folders, check_load, check_site_names, checkpoint_folder
from siteflow.config.inference import inference_config, window_of_patches
from siteflow.config.keys import COMPONENT, names, required
from siteflow.config.optim import check_optimization, optimizer_component, scheduler_component
from siteflow.config.privacy import dp_sgd_config, with_stages
from siteflow.config.paths import resolve_config_path
from siteflow.config.reading import read_config_file
from siteflow.config.schema import CheckpointConfig, Component, ExperimentConfig, SiteConfig, SiteRun, TrainConfig
from siteflow.config.structure import check_structure
from siteflow.config.validation import ConfigError, check_fields, check_keys, check_kwargs, check_type, join
from siteflow.core.errors import nearest
from siteflow.core.registry import DATASETS, LOSSES, MODELS, STRATEGIES, Registry, UnknownNameError, load_components

MAX_ID = 2**31 - 1
"""The largest seed and task id: a stage seeds Lightning with their sum, which must stay
below 2**32."""


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in: mappings recursively, all else replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(config: str | Path, *, task_ids: Sequence[int] | None = None) -> ExperimentConfig:
    """Read, merge and validate a config given by name or path; see the module docstring.

    Args:
        task_ids: train these sites instead of ``current_tasks.task_ids`` (a deployed site
            choosing itself from a shared config).
    """
    path, name = resolve_config_path(config)
    raw = read_config_file(path)
    if task_ids is not None and isinstance(raw, dict) and isinstance(raw.get("current_tasks"), dict):
        raw["current_tasks"]["task_ids"] = list(task_ids)
    try:
        return parse_config(raw, name=name, source=path)
    except ConfigError as error:
        raise error.in_file(str(path)) from None


def parse_config(raw: Any, *, name: str, source: Path) -> ExperimentConfig:
    """Validate an already-loaded config mapping (see :func:`load_config`)."""
    load_components()
    check_structure(raw)
    common = _sections(raw)
    seed = _integer(common.get("seed", 0), "common.seed", 0, MAX_ID)
    num_workers = _integer(common.get("num_workers", 0), "common.num_workers", 0)
    deterministic = common.get("deterministic", False)
    check_type(deterministic, bool, "common.deterministic")
    model = _component(common["model"], "common.model", MODELS, supplied=("in_channels", "num_classes"))
    strategy_component = _component(common["strategy"], "common.strategy", STRATEGIES)
    strategy = build_strategy(strategy_component)
    common_train = common.get("train", {})
    check_type(common_train, dict, "common.train")
    trains = [("common.train", _train_config(common_train, "common.train"))]

    sites = _sites(raw["all_tasks_datasets"], common["dataset"], _deployed_site(raw["current_tasks"], raw["all_tasks_datasets"]))
    site_runs = tuple(dataclasses.replace(t, train=with_stages(t.train, strategy)) for t in _site_runs(raw["current_tasks"], sites, common_train))
    config = ExperimentConfig(
        name=name,
        source=source,
        seed=seed,
        num_workers=num_workers,
        deterministic=deterministic,
        model=model,
        strategy=strategy_component,
        sites=tuple(s.config for s in sites.values()),
        site_runs=site_runs,
    )
    check_strategy_fits(strategy, config)
    trains += [(join(_conf_path(t.task_id), "train"), t.train) for t in site_runs]
    check_buildable(config, strategy, trains)
    return config


def _sections(raw: Any) -> dict:
    """Check the top-level keys and those of ``common``; returns ``common``."""
    if not isinstance(raw, dict):
        raise ConfigError("<top level>", "expected a mapping with keys common, all_tasks_datasets, current_tasks")
    check_keys(raw, names(""), "")
    for key in required(""):
        if key not in raw:
            raise ConfigError(key, "required key is missing")
    common = raw["common"]
    check_type(common, dict, "common")
    check_keys(common, names("common"), "common")
    for key in required("common"):
        if key not in common:
            raise ConfigError(join("common", key), "required key is missing")
    return common


def _integer(value: Any, key_path: str, low: int, high: int | None = None) -> int:
    """``value``, an integer in [low, high] (no upper bound without ``high``)."""
    check_type(value, int, key_path)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(key_path, f"must be {bounds}, got {value}")
    return value


def _conf_path(task_id: int) -> str:
    """The key path of a site's ``task_confs`` entry."""
    return join("current_tasks.task_confs", str(task_id))


def _component(
    value: Any, key_path: str, registry: Registry, *, supplied: tuple[str, ...] = (), reserved: tuple[str, ...] = ()
) -> Component:
    """Validate ``{name, kwargs}`` against ``registry`` and the class's constructor (see
    :func:`~siteflow.config.validation.check_kwargs` for ``supplied`` and ``reserved``)."""
    check_type(value, dict, key_path)
    check_keys(value, names(COMPONENT), key_path)
    if "name" not in value:
        raise ConfigError(join(key_path, "name"), "required key is missing")
    check_type(value["name"], str, join(key_path, "name"))
    try:
        target = registry.get(value["name"])
    except UnknownNameError as error:
        raise ConfigError(join(key_path, "name"), error.message) from None
    kwargs = value.get("kwargs") or {}
    check_kwargs(target, kwargs, join(key_path, "kwargs"), supplied=supplied, reserved=reserved)
    return Component(value["name"], dict(kwargs))


AT_LEAST_ONE = ("epochs", "batch_size", "val_every_n_epochs", "log_every_n_steps", "accumulate_grad_batches")
"""The ``train`` counts that must be at least 1."""


def _train_config(value: dict, key_path: str) -> TrainConfig:
    """Validate a (merged) ``train`` mapping, its optimizer and scheduler included."""
    hints = typing.get_type_hints(TrainConfig)
    check_keys(value, hints, key_path)
    parsed: dict[str, Any] = {}
    for key, item in value.items():
        sub_path = join(key_path, key)
        if key == "loss":
            parsed[key] = _component(item, sub_path, LOSSES)
        elif key == "optimizer":
            parsed[key] = optimizer_component(item, sub_path)
        elif key == "scheduler":
            parsed[key] = None if item is None else scheduler_component(item, sub_path)
        elif key == "inference":
            parsed[key] = inference_config(item, sub_path)
        elif key == "dp_sgd":
            parsed[key] = None if item is None else dp_sgd_config(item, sub_path)
        else:
            check_type(item, hints[key], sub_path)
            parsed[key] = item
    train = TrainConfig(**parsed)
    _check_train_numbers(train, key_path)
    check_optimization(train, key_path)
    return train


def _check_train_numbers(train: TrainConfig, key_path: str) -> None:
    """Counts of at least 1 (:data:`AT_LEAST_ONE`), a positive ``gradient_clip_val``."""
    for key in AT_LEAST_ONE:
        if getattr(train, key) < 1:
            raise ConfigError(join(key_path, key), f"must be at least 1, got {getattr(train, key)}")
    if train.gradient_clip_val is not None and train.gradient_clip_val <= 0:
        raise ConfigError(
            join(key_path, "gradient_clip_val"), f"must be greater than 0 (or null: no clipping), got {train.gradient_clip_val}"
        )


def _deployed_site(current_tasks: Any, entries: Any) -> int | None:
    """The task id a deployed run trains (one current site of several), else None."""
    task_ids = current_tasks.get("task_ids") if isinstance(current_tasks, dict) else None
    if isinstance(task_ids, list) and len(task_ids) == 1 and isinstance(entries, list) and len(entries) > 1:
        return task_ids[0]
    return None


@dataclass(frozen=True)
class _Site:
    """A validated ``all_tasks_datasets`` entry: the site, its dataset mapping merged over
    ``common.dataset``, and what its data looks like (a ``DataSpec``)."""

    config: SiteConfig
    dataset: dict
    spec: Any


def _sites(entries: Any, common_dataset: dict, deployed_site: int | None) -> dict[int, _Site]:
    """Validate ``all_tasks_datasets``; returns task id -> site.

    In a deployed run (``deployed_site`` set), the other sites' data usually is not at this
    hospital: a site whose data folders are missing is kept, marked unavailable (not tested).
    """
    check_type(entries, list, "all_tasks_datasets")
    if not entries:
        raise ConfigError("all_tasks_datasets", "lists no site; list at least one")
    check_type(common_dataset, dict, "common.dataset")
    sites: dict[int, _Site] = {}
    for index, entry in enumerate(entries):
        key_path = join("all_tasks_datasets", index)
        check_type(entry, dict, key_path)
        check_keys(entry, names("all_tasks_datasets[i]"), key_path)
        for key in required("all_tasks_datasets[i]"):
            if key not in entry:
                raise ConfigError(join(key_path, key), "required key is missing")
        task_id = _integer(entry["task_id"], join(key_path, "task_id"), 0, MAX_ID)
        check_type(entry["task_name"], str, join(key_path, "task_name"))
        if task_id in sites:
            raise ConfigError(join(key_path, "task_id"), f"task id {task_id} is listed twice")
        dataset = deep_merge(common_dataset, {k: entry[k] for k in ("name", "kwargs") if k in entry})
        optional = deployed_site is not None and task_id != deployed_site
        component, available, spec = _dataset(dataset, key_path, data_optional=optional)
        sites[task_id] = _Site(SiteConfig(task_id, entry["task_name"], component, available), dataset, spec)
    check_site_names([(join(join("all_tasks_datasets", i), "task_name"), s.config.task_name) for i, s in enumerate(sites.values())])
    check_one_model_fits([(join("all_tasks_datasets", i), s.config.task_name, s.spec) for i, s in enumerate(sites.values())])
    return sites


def _dataset(merged: dict, key_path: str, *, data_optional: bool = False) -> tuple[Component, bool, Any]:
    """Validate a merged dataset entry, including the folders it needs; returns it, whether
    its data is here (missing data is an error unless ``data_optional``) and what its data
    looks like (a ``DataSpec``)."""
    merged_path = f"{key_path} (merged over common.dataset)"
    component = _component(merged, merged_path, DATASETS, reserved=("split",))
    for key in getattr(DATASETS.get(component.name), "site_keys", ()):
        if key not in component.kwargs:
            raise ConfigError(
                join(join(key_path, "kwargs"), key),
                "is missing: the site gives no data location, and the default would read another site's data; set it here or in common.dataset.kwargs",
            )
    spec = data_spec(component, merged_path)
    for key, path in DATASETS.get(component.name).required_paths(**component.kwargs).items():
        if not _exists(path, join(join(key_path, "kwargs"), key)):
            if data_optional:
                return component, False, spec
            raise ConfigError(join(join(key_path, "kwargs"), key), f"data folder {str(path)!r} does not exist")
    return component, True, spec


def _exists(path: Path, key_path: str) -> bool:
    """Whether ``path`` exists; a path the system cannot even look up is a ConfigError."""
    try:
        return path.exists()
    except (OSError, ValueError) as error:
        raise ConfigError(key_path, f"{str(path)[:200]!r} cannot be checked: {error}") from None


def _site_runs(value: Any, sites: dict[int, _Site], common_train: dict) -> tuple[SiteRun, ...]:
    """Validate ``current_tasks`` and merge each trained site's config."""
    check_type(value, dict, "current_tasks")
    check_keys(value, names("current_tasks"), "current_tasks")
    task_ids = _task_ids(value.get("task_ids"), sites)
    by_id = _task_confs(value.get("task_confs") or {}, task_ids)
    site_runs = tuple(_site_run(sites[task_id], by_id.get(task_id, {}), common_train) for task_id in task_ids)
    check_distinct_folders([(join(_conf_path(t.task_id), "checkpoint.save"), t.save_dir) for t in site_runs])
    return site_runs


def _task_ids(task_ids: Any, sites: dict[int, _Site]) -> list[int]:
    """Validate ``current_tasks.task_ids``: known sites, each once, in training order."""
    if task_ids is None:
        raise ConfigError("current_tasks.task_ids", "required key is missing")
    check_type(task_ids, list, "current_tasks.task_ids")
    if not task_ids:
        raise ConfigError("current_tasks.task_ids", "is empty; list the sites to train, in order")
    known = [str(t) for t in sites]
    for index, task_id in enumerate(task_ids):
        check_type(task_id, int, join("current_tasks.task_ids", index))
        if task_id not in sites:
            raise ConfigError(
                join("current_tasks.task_ids", index),
                f"task id {task_id} is not in all_tasks_datasets{nearest(str(task_id), known)} (known: {', '.join(known)})",
            )
    if len(set(task_ids)) != len(task_ids):
        raise ConfigError("current_tasks.task_ids", f"lists a site twice: {task_ids} (use the strategy's cycles)")
    return task_ids


def _task_confs(confs: Any, task_ids: list[int]) -> dict[int, dict]:
    """Validate ``current_tasks.task_confs``; returns task id -> its (unmerged) entry."""
    check_type(confs, dict, "current_tasks.task_confs")
    by_id: dict[int, dict] = {}
    for key, conf in confs.items():
        key_path = join("current_tasks.task_confs", str(key))
        task_id = _task_id_of(key)
        if task_id not in task_ids:
            raise ConfigError(key_path, f"is not one of current_tasks.task_ids {task_ids}")
        if task_id in by_id:
            raise ConfigError(key_path, f"is the second entry of task {task_id}; merge them")
        check_type(conf, dict, key_path)
        check_keys(conf, names("current_tasks.task_confs.<task id>"), key_path)
        by_id[task_id] = conf
    return by_id


def _task_id_of(key: Any) -> int | None:
    """The task id a ``task_confs`` key names (``1`` or ``"1"``), else None."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    return None


def _site_run(site: _Site, conf: dict, common_train: dict) -> SiteRun:
    """One trained site: its ``task_confs`` entry merged over its site entry and ``common``."""
    key_path = _conf_path(site.config.task_id)
    site_config, spec = site.config, site.spec
    if "dataset" in conf:
        check_type(conf["dataset"], dict, join(key_path, "dataset"))
        component, _, spec = _dataset(deep_merge(site.dataset, conf["dataset"]), key_path)
        check_override(site_config.task_name, spec, site.spec, join(key_path, "dataset"))
        site_config = dataclasses.replace(site_config, dataset=component)
    train_override = conf.get("train", {})
    check_type(train_override, dict, join(key_path, "train"))
    train_path = join(key_path, "train")
    train = _train_config(deep_merge(common_train, train_override), train_path)
    inference_path = join(train_path if "inference" in train_override else "common.train", "inference")
    inference = window_of_patches(train.inference, spec.patch_size, inference_path)
    train = dataclasses.replace(train, inference=inference)
    return SiteRun(site_config, train, _checkpoint(conf.get("checkpoint") or {}, join(key_path, "checkpoint")))


def _checkpoint(value: Any, key_path: str) -> CheckpointConfig:
    """Validate a ``checkpoint`` mapping; ``save`` comes back normalised."""
    check_fields(value, CheckpointConfig, key_path)
    checkpoint = CheckpointConfig(**value)
    if checkpoint.load is not None:
        check_load(checkpoint.load, join(key_path, "load"))
    if checkpoint.save is None:
        return checkpoint
    return dataclasses.replace(checkpoint, save=checkpoint_folder(checkpoint.save, join(key_path, "save")))
