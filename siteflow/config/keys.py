"""The keys of a config's structural sections: what :mod:`.loading` accepts, and what the
documentation's config reference lists (:mod:`.reference`), from one table.

The sections whose keys are a dataclass's fields (``train``, ``train.inference``,
``train.dp_sgd``, ``checkpoint``) are described by those dataclasses in :mod:`.schema`; a
component's ``kwargs`` by the constructor of the class its ``name`` refers to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """One key of a section: its name, the YAML type it takes, its default (``None``: the
    key is required) and what it means."""

    name: str
    type: str
    default: str | None
    meaning: str


COMPONENT = "{name, kwargs}"
"""The type of a key naming a registered class with the keyword arguments to build it."""

SECTIONS: dict[str, tuple[Key, ...]] = {
    "": (
        Key("common", "mapping", None, "what every site shares: seed, data, model, strategy, training"),
        Key("all_tasks_datasets", "list", None, "every site of the study, each a partial dataset entry; every listed site is a test site"),
        Key("current_tasks", "mapping", None, "the sites this run trains, in order, with per-site overrides: all of them (simulated) or one (deployed)"),
    ),
    "common": (
        Key("seed", "int", "0", "seeds weights, data order, augmentation and everything random (0 to 2**31 - 1)"),
        Key("num_workers", "int", "0", "data-loader worker processes per site (0: load in the training process)"),
        Key("deterministic", "bool", "false", "Lightning's deterministic mode (deterministic kernels, no cuDNN benchmarking)"),
        Key("dataset", COMPONENT, None, "the dataset every site's entry is merged over (see Datasets below)"),
        Key("model", COMPONENT, None, "the network (see Models below); in_channels and num_classes come from the data"),
        Key("strategy", COMPONENT, None, "how sites train and how weights move between them (see Strategies below)"),
        Key("train", "mapping", "{}", "how a site trains (see common.train below)"),
    ),
    "all_tasks_datasets[i]": (
        Key("task_id", "int", None, "the site's id (unique; the order of all_tasks_datasets is the order of a relay)"),
        Key("task_name", "str", None, "the site's name in results, logs and run folders"),
        Key("name", "str", "common.dataset.name", "a dataset other than common.dataset's for this site"),
        Key("kwargs", "mapping", "{}", "the site's dataset options, deep-merged over common.dataset.kwargs"),
    ),
    "current_tasks": (
        Key("task_ids", "list of int", None, "the sites trained here, in training order (one: a deployed run at that site)"),
        Key("task_confs", "mapping", "{}", "per-site overrides, keyed by task id"),
    ),
    "current_tasks.task_confs.<task id>": (
        Key("dataset", "mapping", "{}", "dataset options of this site, merged over its all_tasks_datasets entry"),
        Key("train", "mapping", "{}", "training options of this site, merged over common.train"),
        Key("checkpoint", "mapping", "{}", "where this site saves and what it starts from (see checkpoint below)"),
    ),
    COMPONENT: (
        Key("name", "str", None, "the registered name of the class"),
        Key("kwargs", "mapping", "{}", "its options: the constructor's typed parameters"),
    ),
}
"""Section (a key path pattern; ``""`` is the top level) -> its keys, in the order shown."""


def names(section: str) -> list[str]:
    """The key names of ``section`` (see :data:`SECTIONS`)."""
    return [key.name for key in SECTIONS[section]]


def required(section: str) -> list[str]:
    """The keys of ``section`` without a default."""
    return [key.name for key in SECTIONS[section] if key.default is None]
