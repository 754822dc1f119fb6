"""Experiment configs: one YAML file describes every site of a multi-site study.

A config has three top-level keys:

``common``
    seed, workers, and ``dataset`` / ``model`` / ``strategy`` as ``{name, kwargs}``, plus
    ``train`` (epochs, batch size, precision, loss, optimizer, scheduler, ...).
``all_tasks_datasets``
    one partial dataset entry per site: ``{task_id, task_name, name?, kwargs}``, deep-merged
    over ``common.dataset``. Every listed site is a test site.
``current_tasks``
    ``task_ids``: the sites trained here, in order; ``task_confs``: per-site overrides of
    ``dataset`` and ``train`` plus ``checkpoint: {save, load, resume}``. All sites listed means
    a simulated run; one site means a deployed run at that site.

Per site, the merge order is: the site's ``task_confs`` entry over its dataset entry over
``common``. :func:`load_config` validates everything (key names, types, registry names, data
folders, task ids) before any training and raises :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from siteflow.config.paths import resolve_config_path
from siteflow.config.schema import CheckpointConfig, Component, ExperimentConfig, SiteConfig, TaskConfig, TrainConfig
from siteflow.config.validation import ConfigError, check_keys, check_kwargs, check_type, join, nearest
from siteflow.core.registry import DATASETS, LOSSES, MODELS, STRATEGIES, Registry, UnknownNameError, load_components



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
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError("<file>", f"not valid YAML: {error}", str(path)) from None
    if task_ids is not None and isinstance(raw, dict) and isinstance(raw.get("current_tasks"), dict):
        raw["current_tasks"]["task_ids"] = list(task_ids)
    try:
        return parse_config(raw, name=name, source=path)
    except ConfigError as error:
        raise error.in_file(str(path)) from None


def parse_config(raw: Any, *, name: str, source: Path) -> ExperimentConfig:
    """Validate an already-loaded config mapping (see :func:`load_config`)."""
    load_components()
    if not isinstance(raw, dict):
        raise ConfigError("<top level>", "expected a mapping with keys common, all_tasks_datasets, current_tasks")
    check_keys(raw, ["common", "all_tasks_datasets", "current_tasks"], "")
    for key in ("common", "all_tasks_datasets", "current_tasks"):
        if key not in raw:
            raise ConfigError(key, "required key is missing")

    common = raw["common"]
    check_type(common, dict, "common")
    check_keys(common, ["seed", "num_workers", "dataset", "model", "strategy", "train"], "common")
    for key in ("dataset", "model", "strategy"):
        if key not in common:
            raise ConfigError(join("common", key), "required key is missing")
    seed = common.get("seed", 0)
    check_type(seed, int, "common.seed")
    num_workers = common.get("num_workers", 0)
    check_type(num_workers, int, "common.num_workers")
    model = _component(common["model"], "common.model", MODELS, supplied=("in_channels", "num_classes"))
    strategy = _component(common["strategy"], "common.strategy", STRATEGIES)
    try:  # strategies are cheap to build: let them check their option values too
        STRATEGIES.get(strategy.name)(**strategy.kwargs)
    except ValueError as error:
        raise ConfigError("common.strategy.kwargs", str(error)) from None
    common_train = common.get("train", {})
    check_type(common_train, dict, "common.train")
    _train_config(common_train, "common.train")

    sites = _sites(raw["all_tasks_datasets"], common["dataset"], _deployed_site(raw["current_tasks"], raw["all_tasks_datasets"]))
    tasks = _tasks(raw["current_tasks"], sites, common["dataset"], common_train)
    return ExperimentConfig(
        name=name,
        source=source,
        seed=seed,
        num_workers=num_workers,
        model=model,
        strategy=strategy,
        sites=tuple(s for s, _ in sites.values()),
        tasks=tasks,
    )


def _component(value: Any, key_path: str, registry: Registry, supplied: tuple[str, ...] = ()) -> Component:
    """Validate ``{name, kwargs}`` against ``registry`` and the class's constructor."""
    check_type(value, dict, key_path)
    check_keys(value, ["name", "kwargs"], key_path)
    if "name" not in value:
        raise ConfigError(join(key_path, "name"), "required key is missing")
    check_type(value["name"], str, join(key_path, "name"))
    try:
        target = registry.get(value["name"])
    except UnknownNameError as error:
        raise ConfigError(join(key_path, "name"), error.message) from None
    kwargs = value.get("kwargs") or {}
    check_kwargs(target, kwargs, join(key_path, "kwargs"), supplied=supplied)
    return Component(value["name"], dict(kwargs))


def _torch_component(value: Any, key_path: str, module: Any) -> Component:
    """Validate ``{name, kwargs}`` naming a class of a torch module (optimizers, schedulers)."""
    check_type(value, dict, key_path)
    check_keys(value, ["name", "kwargs"], key_path)
    name = value.get("name")
    check_type(name, str, join(key_path, "name"))
    known = [n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type)]
    if name not in known:
        raise ConfigError(join(key_path, "name"), f"unknown {module.__name__} class {name!r}{nearest(name, known)}")
    kwargs = value.get("kwargs") or {}
    check_kwargs(getattr(module, name), kwargs, join(key_path, "kwargs"), supplied=("params", "optimizer"))
    return Component(name, dict(kwargs))


def _train_config(value: dict, key_path: str) -> TrainConfig:
    """Validate a (merged) ``train`` mapping."""
    hints = typing.get_type_hints(TrainConfig)
    check_keys(value, hints, key_path)
    parsed: dict[str, Any] = {}
    for key, item in value.items():
        sub_path = join(key_path, key)
        if key == "loss":
            parsed[key] = _component(item, sub_path, LOSSES)
        elif key == "optimizer":
            parsed[key] = _torch_component(item, sub_path, torch.optim)
        elif key == "scheduler":
            parsed[key] = None if item is None else _torch_component(item, sub_path, torch.optim.lr_scheduler)
        else:
            check_type(item, hints[key], sub_path)
            parsed[key] = item
    for key in ("epochs", "batch_size", "val_every_n_epochs", "log_every_n_steps", "accumulate_grad_batches"):
        if key in parsed and parsed[key] < 1:
            raise ConfigError(join(key_path, key), f"must be at least 1, got {parsed[key]}")
    return TrainConfig(**parsed)


def _deployed_site(current_tasks: Any, entries: Any) -> int | None:
    """The task id a deployed run trains (one current site of several), else None."""
    task_ids = current_tasks.get("task_ids") if isinstance(current_tasks, dict) else None
    if isinstance(task_ids, list) and len(task_ids) == 1 and isinstance(entries, list) and len(entries) > 1:
        return task_ids[0]
    return None


def _sites(entries: Any, common_dataset: dict, deployed_site: int | None) -> dict[int, tuple[SiteConfig, dict]]:
    """Validate ``all_tasks_datasets``; returns task id -> (site, merged dataset mapping).

    In a deployed run (``deployed_site`` set), the other sites' data usually is not at this
    hospital: a site whose data folders are missing is kept, marked unavailable (not tested).
    """
    check_type(entries, list, "all_tasks_datasets")
    if not entries:
        raise ConfigError("all_tasks_datasets", "lists no site; list at least one")
    check_type(common_dataset, dict, "common.dataset")
    sites: dict[int, tuple[SiteConfig, dict]] = {}
    for index, entry in enumerate(entries):
        key_path = join("all_tasks_datasets", index)
        check_type(entry, dict, key_path)
        check_keys(entry, ["task_id", "task_name", "name", "kwargs"], key_path)
        for key in ("task_id", "task_name"):
            if key not in entry:
                raise ConfigError(join(key_path, key), "required key is missing")
        check_type(entry["task_id"], int, join(key_path, "task_id"))
        check_type(entry["task_name"], str, join(key_path, "task_name"))
        if entry["task_id"] in sites:
            raise ConfigError(join(key_path, "task_id"), f"task id {entry['task_id']} is listed twice")
        dataset = deep_merge(common_dataset, {k: entry[k] for k in ("name", "kwargs") if k in entry})
        optional = deployed_site is not None and entry["task_id"] != deployed_site
        component, available = _dataset(dataset, key_path, data_optional=optional)
        site = SiteConfig(entry["task_id"], entry["task_name"], component, available)
        sites[site.task_id] = (site, dataset)
    return sites


def _dataset(merged: dict, key_path: str, *, data_optional: bool = False) -> tuple[Component, bool]:
    """Validate a merged dataset entry, including the folders it needs; returns it and
    whether its data is here (missing data is an error unless ``data_optional``)."""
    component = _component(merged, f"{key_path} (merged over common.dataset)", DATASETS, supplied=("split",))
    for key, path in DATASETS.get(component.name).required_paths(**component.kwargs).items():
        if not path.exists():
            if data_optional:
                return component, False
            raise ConfigError(join(join(key_path, "kwargs"), key), f"data folder {str(path)!r} does not exist")
    return component, True


def _tasks(
    value: Any,
    sites: dict[int, tuple[SiteConfig, dict]],
    common_dataset: dict,
    common_train: dict,
) -> tuple[TaskConfig, ...]:
    """Validate ``current_tasks`` and merge each trained site's config."""
    check_type(value, dict, "current_tasks")
    check_keys(value, ["task_ids", "task_confs"], "current_tasks")
    task_ids = value.get("task_ids")
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
    confs = value.get("task_confs") or {}
    check_type(confs, dict, "current_tasks.task_confs")
    by_id: dict[int, dict] = {}
    for key, conf in confs.items():
        key_path = join("current_tasks.task_confs", str(key))
        task_id = int(key) if isinstance(key, int) or str(key).isdigit() else None
        if task_id not in task_ids:
            raise ConfigError(key_path, f"is not one of current_tasks.task_ids {task_ids}")
        check_type(conf, dict, key_path)
        check_keys(conf, ["dataset", "train", "checkpoint"], key_path)
        by_id[task_id] = conf

    tasks = []
    for task_id in task_ids:
        site, site_dataset = sites[task_id]
        conf = by_id.get(task_id, {})
        key_path = join("current_tasks.task_confs", str(task_id))
        if "dataset" in conf:
            check_type(conf["dataset"], dict, join(key_path, "dataset"))
            site = dataclasses.replace(site, dataset=_dataset(deep_merge(site_dataset, conf["dataset"]), key_path)[0])
        train_value = deep_merge(common_train, conf.get("train", {}))
        checkpoint_value = conf.get("checkpoint") or {}
        check_type(checkpoint_value, dict, join(key_path, "checkpoint"))
        hints = typing.get_type_hints(CheckpointConfig)
        check_keys(checkpoint_value, hints, join(key_path, "checkpoint"))
        for key, item in checkpoint_value.items():
            check_type(item, hints[key], join(join(key_path, "checkpoint"), key))
        tasks.append(TaskConfig(site, _train_config(train_value, join(key_path, "train")), CheckpointConfig(**checkpoint_value)))
    save_dirs = [t.save_dir for t in tasks]
    if len(set(save_dirs)) != len(save_dirs):
        raise ConfigError("current_tasks.task_confs", f"two sites save into the same folder: {save_dirs}")
    return tuple(tasks)
