"""Seeded mutation fuzzing of the config layer.

Every shipped demo config (its data root moved into a temporary folder) is mutated
:data:`CASES_PER_DEMO` times, one to three mutations a case: keys deleted, values of another
type, bad numbers (negative, zero, NaN, infinite, huge), path-like strings, duplicated sites,
wrong registry names, nested ``task_confs`` overrides, strategy swaps that keep the options,
random bytes, deep nesting, YAML alias bombs and self-references. Each case must end either in
one :class:`ConfigError` that names the file and a key path, or in a config whose parts all
build: the task, the strategy, the model (on the ``meta`` device: shapes without memory, so
that a huge width costs nothing), the loss and the optimizer and scheduler of every trained
site. Any other exception fails the test with the case's seed and mutations. Validation only:
nothing trains, and no data is generated.
"""

from __future__ import annotations

import copy
import math
import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from siteflow.config import PACKAGED_CONFIGS, ConfigError, ExperimentConfig, load_config
from siteflow.core.registry import REGISTRIES, STRATEGIES, load_components
from siteflow.tasks import build_task
from siteflow.tasks.base import configure_optimization

DEMOS = sorted(p.stem for p in (PACKAGED_CONFIGS / "demo").glob("*.yaml"))
CASES_PER_DEMO = 50
SENTINEL = "FUZZ_SENTINEL"
"""A value replaced, in the YAML text, by a fragment that a mapping cannot hold (nesting, aliases)."""

BAD_NUMBERS = [-1, 0, -0.5, 0.0, math.nan, math.inf, -math.inf, 1e300, 10**30, 2**63, 1e-300, 7, 0.5, 1.0]
PATHS = ["../x", "/abs", "a/../../b", "./a/", "a/./b/..", "", ".", "..", "a/b", "a\\b", "x\x00y", "  ", "task_1", "site1", "/tmp"]
ODD_VALUES = [None, True, "text", 3, 2.5, [], {}, [1, "a"], {"x": 1}, "-1", ["a", ["b"]]]
TYPOS = ["", "unet2", "Adamw", "sequental", "SGD", "StepLR", "fundus", "resnet_classifier", "bce", "x" * 300]
TRAIN_OVERRIDES = [
    {"optimizer": {"name": "SGD", "kwargs": {"lr": -0.1}}},
    {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.1, "momentum": 1.5}}},
    {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.1, "momentum": 0.9}}},
    {"optimizer": {"name": "Adam", "kwargs": {"lr": 0.001, "betas": [0.9, 1.2]}}},
    {"optimizer": {"name": "AdamW", "kwargs": {"lr": 0.001, "weight_decay": -0.01}}},
    {"optimizer": {"name": "SparseAdam"}},
    {"optimizer": {"name": "LBFGS"}},
    {"scheduler": {"name": "StepLR", "kwargs": {"step_size": 0}}},
    {"scheduler": {"name": "StepLR", "kwargs": {"step_size": 2, "gamma": -1.0}}},
    {"scheduler": {"name": "StepLR", "kwargs": {"step_size": 2, "gamma": 0.5}}},
    {"scheduler": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 0}}},
    {"scheduler": {"name": "CosineAnnealingLR", "kwargs": {"T_max": 10}}},
    {"scheduler": {"name": "ReduceLROnPlateau"}},
    {"scheduler": {"name": "OneCycleLR", "kwargs": {"max_lr": 0.1, "total_steps": 3}}},
    {"scheduler": {"name": "ExponentialLR", "kwargs": {"gamma": 1e30}}},
    {"scheduler": {"name": "LambdaLR", "kwargs": {"lr_lambda": "x"}}},
    {"scheduler": None},
    {"epochs": 0},
    {"batch_size": -4},
    {"precision": "bf16-mixed"},
    {"precision": "fp8"},
    {"gradient_clip_val": 0},
    {"gradient_clip_val": 1.0},
    {"loss": {"name": "dice_ce", "kwargs": {"class_weights": [1.0, math.nan, 1.0]}}},
    {"loss": {"name": "explog", "kwargs": {"gamma": -1}}},
    {"loss": {"name": "bce"}},
]
DATASET_OVERRIDES = [
    {"name": "synthetic_vessels", "kwargs": {"folder": "DRIVE"}},
    {"name": "synthetic_cxr", "kwargs": {"folder": "site2"}},
    {"name": "fundus"},
    {"kwargs": {"img_size": [0, 64]}},
    {"kwargs": {"img_size": [64, 32]}},
    {"kwargs": {"img_size": [32, 32]}},
    {"kwargs": {"channels": 3}},
    {"kwargs": {"labels": ["edema"]}},
    {"kwargs": {"labels": ["nothing"]}},
    {"kwargs": {"root_path": "/nonexistent/data"}},
]
STRATEGY_OPTIONS = ["min_sites", "rounds", "local_epochs", "cycles", "replay_fraction", "mu", "fine_tune_epochs", "save_dir"]


# -- walking a config ------------------------------------------------------------------------------


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of ``value``'s mappings and lists, at any depth."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append((value, key))
        found.extend(slots(item))
    return found


def number_slots(raw: dict) -> list[tuple[Any, Any]]:
    """The slots that hold a number (not a bool)."""
    return [(c, k) for c, k in slots(raw) if isinstance(c[k], (int, float)) and not isinstance(c[k], bool)]


def components(raw: dict) -> list[dict]:
    """Every ``{name, kwargs}`` mapping (a registered component, an optimizer, a scheduler)."""
    return [c[k] for c, k in slots(raw) if isinstance(c[k], dict) and "name" in c[k]]


def site_entries(raw: dict) -> list[dict]:
    """The ``all_tasks_datasets`` entries that are mappings."""
    entries = raw.get("all_tasks_datasets")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def child(container: dict, key: Any) -> dict:
    """``container[key]``, made a mapping first if it is none."""
    if not isinstance(container.get(key), dict):
        container[key] = {}
    return container[key]


def task_confs(raw: dict, rng: random.Random) -> dict:
    """A ``task_confs`` entry for one of the current sites (created if need be), keyed by an
    int or a string at random."""
    current = child(raw, "current_tasks")
    task_ids = current.get("task_ids") if isinstance(current.get("task_ids"), list) else []
    task_id = rng.choice([t for t in task_ids if isinstance(t, (int, str))] or [1])
    return child(child(current, "task_confs"), str(task_id) if rng.random() < 0.2 else task_id)


# -- mutations of the mapping -----------------------------------------------------------------------


def delete_key(raw: dict, rng: random.Random) -> None:
    """Delete a key anywhere."""
    found = [(c, k) for c, k in slots(raw) if isinstance(c, dict)]
    if found:
        container, key = rng.choice(found)
        del container[key]


def change_type(raw: dict, rng: random.Random) -> None:
    """Replace a value anywhere by one of another type."""
    found = slots(raw)
    if found:
        container, key = rng.choice(found)
        container[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def bad_number(raw: dict, rng: random.Random) -> None:
    """Replace a number by a negative, zero, NaN, infinite, huge or tiny one."""
    found = number_slots(raw)
    if found:
        container, key = rng.choice(found)
        container[key] = rng.choice(BAD_NUMBERS)


def bad_path(raw: dict, rng: random.Random) -> None:
    """Put a path-like string into a site name, a checkpoint folder or file, or a data path."""
    value = rng.choice(PATHS)
    where = rng.choice(["name", "save", "load", "root", "folder"])
    entries = site_entries(raw)
    if where == "name" and entries:
        rng.choice(entries)["task_name"] = value
    elif where in ("save", "load"):
        child(task_confs(raw, rng), "checkpoint")[where] = value
    elif entries:
        child(rng.choice(entries), "kwargs")["root_path" if where == "root" else "folder"] = value


def duplicate_site(raw: dict, rng: random.Random) -> None:
    """Add a copy of a site: same id, same name, or a new site (trained or not)."""
    entries = site_entries(raw)
    if not entries:
        return
    twin = copy.deepcopy(rng.choice(entries))
    mode = rng.choice(["same id", "same name", "new site"])
    if mode != "same id":
        twin["task_id"] = 9
    if mode == "new site":
        twin["task_name"] = "site9"
    raw["all_tasks_datasets"].append(twin)
    current = raw.get("current_tasks")
    if mode != "same id" and isinstance(current, dict) and isinstance(current.get("task_ids"), list) and rng.random() < 0.5:
        current["task_ids"].append(9)


def wrong_name(raw: dict, rng: random.Random) -> None:
    """Name a component with another registry's name, a torch class or a typo."""
    found = components(raw)
    if found:
        pool = [name for registry in REGISTRIES for name in registry.names()] + TYPOS
        rng.choice(found)["name"] = rng.choice(pool)


def override_site(raw: dict, rng: random.Random) -> None:
    """Give a trained site a ``train`` or ``dataset`` override in ``task_confs``."""
    conf = task_confs(raw, rng)
    if rng.random() < 0.6:
        child(conf, "train").update(copy.deepcopy(rng.choice(TRAIN_OVERRIDES)))
    else:
        conf["dataset"] = copy.deepcopy(rng.choice(DATASET_OVERRIDES))


def override_common_train(raw: dict, rng: random.Random) -> None:
    """Change ``common.train`` as :func:`override_site` changes a site's."""
    child(child(raw, "common"), "train").update(copy.deepcopy(rng.choice(TRAIN_OVERRIDES)))


def swap_strategy(raw: dict, rng: random.Random) -> None:
    """Switch to another strategy, keeping the options."""
    child(child(raw, "common"), "strategy")["name"] = rng.choice(STRATEGIES.names())


def strategy_option(raw: dict, rng: random.Random) -> None:
    """Set a strategy option (min_sites, rounds, save_dir...) to an odd value."""
    kwargs = child(child(child(raw, "common"), "strategy"), "kwargs")
    kwargs[rng.choice(STRATEGY_OPTIONS)] = rng.choice(BAD_NUMBERS + [1, 2, 3, 4, "../x", "joint2"])


def change_task_ids(raw: dict, rng: random.Random) -> None:
    """Train other sites: none, unknown ones, one twice, strings."""
    child(raw, "current_tasks")["task_ids"] = rng.choice([[], [1], [3], [2, 1], [1, 1], [1, 4], [3, 2, 1], ["1"], [True]])


def unknown_key(raw: dict, rng: random.Random) -> None:
    """Add a key (a typo, or one siteflow sets itself) to a mapping."""
    found = [c[k] for c, k in slots(raw) if isinstance(c[k], dict)] + [raw]
    rng.choice(found)[rng.choice(["sead", "extra", 7, "kwarg", "split", "params"])] = 1


def place_sentinel(raw: dict, rng: random.Random) -> None:
    """Mark a value to replace by a YAML fragment (see :data:`SENTINEL_FRAGMENTS`)."""
    found = slots(raw)
    if found:
        container, key = rng.choice(found)
        container[key] = SENTINEL


MAPPING_MUTATIONS: list[Callable[[dict, random.Random], None]] = [
    delete_key, change_type, bad_number, bad_number, bad_path, bad_path, duplicate_site, wrong_name, override_site,
    override_site, override_common_train, swap_strategy, strategy_option, change_task_ids, unknown_key, place_sentinel,
]


# -- mutations of the text ------------------------------------------------------------------------


def deep_nesting(rng: random.Random) -> str:
    """Lists nested a few to a thousand levels deep."""
    depth = rng.choice([8, 31, 33, 200, 1000])
    return "[" * depth + "]" * depth


def alias_bomb(rng: random.Random) -> str:
    """Nested anchors, each level repeating the one below ``width`` times."""
    levels, width = rng.choice([(2, 3), (3, 5), (9, 9), (12, 10)])
    fragment = "&l0 [" + ", ".join(["1.0"] * width) + "]"
    for level in range(1, levels):
        fragment = f"&l{level} [{fragment}, " + ", ".join([f"*l{level - 1}"] * (width - 1)) + "]"
    return fragment


def self_reference(rng: random.Random) -> str:
    """A list or a mapping that contains itself."""
    return rng.choice(["&r [*r]", "&m {a: *m}"])


SENTINEL_FRAGMENTS = [deep_nesting, alias_bomb, self_reference]


def random_bytes(data: bytes, rng: random.Random) -> bytes:
    """Overwrite or insert a few random bytes (often not UTF-8)."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        position = rng.randrange(len(data) + 1)
        data[position:position + rng.randint(0, 2)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    return bytes(data)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file anywhere."""
    return data[: rng.randrange(len(data) + 1)]


def repeat_top_key(data: bytes, rng: random.Random) -> bytes:
    """Name a top-level key a second time."""
    return data + f"\n{rng.choice(['common', 'current_tasks'])}: {{}}\n".encode()


def replace_document(data: bytes, rng: random.Random) -> bytes:
    """A document that is no mapping, or not text."""
    return rng.choice([b"", b"- 1\n- 2\n", b"hello\n", b"null\n", b"42\n", b"[]\n", b"\xff\xfe\x00c\x00"])


TEXT_MUTATIONS = [random_bytes, truncate, repeat_top_key, replace_document]


# -- one case ---------------------------------------------------------------------------------------


@dataclass
class Case:
    """One mutated config: its seed, what was done, and the YAML bytes."""

    seed: str
    done: list[str] = field(default_factory=list)
    data: bytes = b""


def make_case(base: dict, seed: str) -> Case:
    """A copy of ``base`` with one to three seeded mutations, as YAML bytes."""
    rng = random.Random(seed)
    case = Case(seed)
    raw = copy.deepcopy(base)
    for _ in range(rng.choice([1, 1, 2, 3])):
        mutation = rng.choice(MAPPING_MUTATIONS)
        mutation(raw, rng)
        case.done.append(mutation.__name__)
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=10**6)
    if SENTINEL in text:
        fragment = rng.choice(SENTINEL_FRAGMENTS)
        text = text.replace(SENTINEL, fragment(rng), 1)
        case.done.append(fragment.__name__)
    case.data = text.encode()
    if rng.random() < 0.12:
        mutation = rng.choice(TEXT_MUTATIONS)
        case.data = mutation(case.data, rng)
        case.done.append(mutation.__name__)
    return case


def outcome(path: Path) -> str:
    """``"refused"`` (one ConfigError naming the file and a key path) or ``"accepted"``
    (every part builds); any other exception propagates."""
    try:
        config = load_config(path)
    except ConfigError as error:
        assert error.key_path, f"a ConfigError without a key path: {error}"
        assert str(path) in str(error), f"a ConfigError that does not name the file: {error}"
        return "refused"
    check_accepted(config)
    return "accepted"


def check_accepted(config: ExperimentConfig) -> None:
    """Build every part of an accepted config, and check what validation promises."""
    task = build_task(config)
    strategy = STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs)
    with torch.device("meta"):
        model = task.build_model()
        strategy.build_network(task)
    for trained in config.site_runs:
        task.build_loss(trained.train)
        step_through_epochs(configure_optimization(trained.train, model.parameters()), trained.train.epochs)
    names = [site.task_name for site in config.sites]
    assert len(set(names)) == len(names) and not any("/" in n or ".." in n for n in names), names
    folders = [trained.save_dir for trained in config.site_runs]
    assert len(set(folders)) == len(folders), folders
    assert all(not os.path.isabs(f) and os.path.normpath(f) == f and not f.startswith("..") for f in folders), folders
    assert all_finite(config.processed())


def step_through_epochs(optimization: Any, epochs: int) -> None:
    """Step the scheduler of ``configure_optimization``'s value once per epoch (up to 100),
    as training does; the learning rate must stay a finite number, at least 0."""
    if not isinstance(optimization, dict):
        return
    scheduler = optimization["lr_scheduler"]["scheduler"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no optimizer step comes first: the meta model has no gradients
        for _ in range(min(epochs, 100)):
            scheduler.step()
    rates = [float(group["lr"]) for group in optimization["optimizer"].param_groups]
    assert all(math.isfinite(rate) and rate >= 0 for rate in rates), rates


def all_finite(value: Any) -> bool:
    """Whether every float in ``value`` (plain data) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return all(all_finite(item) for item in items)


# -- the test ---------------------------------------------------------------------------------------


def demo_config(name: str, data_root: Path) -> dict:
    """A shipped demo config, its data root moved to ``data_root``."""
    raw = yaml.safe_load((PACKAGED_CONFIGS / "demo" / f"{name}.yaml").read_text())
    raw["common"]["dataset"]["kwargs"]["root_path"] = str(data_root)
    return raw


@pytest.mark.parametrize("demo", DEMOS)
@pytest.mark.slow
def test_every_mutation_is_refused_with_a_key_path_or_builds(demo, tmp_path):
    load_components()
    data_root = tmp_path / "data"
    base = demo_config(demo, data_root)
    counts = {"refused": 0, "accepted": 0}
    failures = []
    for index in range(CASES_PER_DEMO):
        case = make_case(base, f"{demo}/{index}")
        path = tmp_path / f"case{index}.yaml"
        path.write_bytes(case.data)
        try:
            counts[outcome(path)] += 1
        except Exception as error:  # noqa: BLE001 -- any other exception is what the fuzzer looks for
            failures.append(f"seed {case.seed!r} {case.done}: {type(error).__name__}: {str(error)[:300]}")
    print(f"demo/{demo}: {CASES_PER_DEMO} cases, {counts['refused']} refused, {counts['accepted']} accepted")
    assert not failures, "\n".join(failures)
    assert counts["refused"] >= 10 and counts["accepted"] >= 3, f"the mutations are too mild or too harsh: {counts}"
    assert not data_root.exists(), "validation generated data"
