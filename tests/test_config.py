"""Config: merging per site, validation errors naming the key path, options inherited through
``**kwargs``, config lookup."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from siteflow.config import PACKAGED_CONFIGS, ConfigError, deep_merge, load_config, parse_config, resolve_config_path
from siteflow.config.validation import check_kwargs, defaults, schema


@pytest.fixture
def raw(tmp_path: Path) -> dict:
    """A valid three-site config over (empty) DoFE domain folders."""
    for domain in ("Domain1", "Domain2", "Domain3"):
        (tmp_path / "fundus" / domain).mkdir(parents=True)
    return {
        "common": {
            "seed": 3,
            "dataset": {"name": "fundus", "kwargs": {"root_path": str(tmp_path / "fundus"), "img_size": [64, 64]}},
            "model": {"name": "unet", "kwargs": {"base_channels": 8}},
            "strategy": {"name": "sequential"},
            "train": {"epochs": 4, "batch_size": 2, "optimizer": {"name": "SGD", "kwargs": {"lr": 0.1}}},
        },
        "all_tasks_datasets": [
            {"task_id": 1, "task_name": "one", "kwargs": {"folder": "Domain1"}},
            {"task_id": 2, "task_name": "two", "kwargs": {"folder": "Domain2", "img_size": [32, 32]}},
            {"task_id": 3, "task_name": "three", "kwargs": {"folder": "Domain3"}},
        ],
        "current_tasks": {
            "task_ids": [2, 1],
            "task_confs": {2: {"train": {"epochs": 7}, "dataset": {"kwargs": {"use_roi": True}}, "checkpoint": {"save": "b"}}},
        },
    }


def parse(raw: dict):
    return parse_config(raw, name="test", source=Path("test.yaml"))


def error_of(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    return info.value


def test_merge_order_site_override_over_site_entry_over_common(raw):
    config = parse(raw)
    assert [t.task_id for t in config.tasks] == [2, 1]
    second, first = config.tasks
    # task_confs beats the site entry, which beats common
    assert second.train.epochs == 7 and first.train.epochs == 4
    assert second.train.batch_size == 2 and second.train.optimizer.name == "SGD"
    assert second.site.dataset.kwargs == {
        "root_path": raw["common"]["dataset"]["kwargs"]["root_path"],
        "img_size": [32, 32],
        "folder": "Domain2",
        "use_roi": True,
    }
    assert first.site.dataset.kwargs["img_size"] == [64, 64]
    assert second.save_dir == "b" and first.save_dir == "task_1"
    # every listed site is a test site, whatever is trained; overrides do not leak into them
    assert [s.task_name for s in config.sites] == ["one", "two", "three"]
    assert "use_roi" not in config.sites[1].dataset.kwargs
    assert not config.deployed


def test_one_current_site_is_a_deployed_run(raw):
    raw["current_tasks"] = {"task_ids": [3]}
    assert parse(raw).deployed


def test_a_deployed_site_needs_only_its_own_data(raw, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "fundus" / "Domain3")
    raw["current_tasks"] = {"task_ids": [1]}
    config = parse(raw)
    assert [s.available for s in config.sites] == [True, True, False]
    raw["current_tasks"] = {"task_ids": [3]}
    assert error_of(raw).key_path == "all_tasks_datasets[2].kwargs.folder"
    raw["current_tasks"] = {"task_ids": [1, 2]}  # simulated: every site's data must be here
    assert "Domain3' does not exist" in error_of(raw).problem


def test_deep_merge_recurses_into_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


@pytest.mark.parametrize(
    "edit, key_path, message",
    [
        (lambda r: r["common"].update(sead=1), "common.sead", "unknown key; did you mean 'seed'?"),
        (lambda r: r["common"]["train"].update(epochs="ten"), "common.train.epochs", "expected an integer, got 'ten'"),
        (lambda r: r["common"]["train"].update(epochs=0), "common.train.epochs", "must be at least 1"),
        (lambda r: r["common"]["model"].update(name="unet2"), "common.model.name", "unknown model 'unet2'; did you mean 'unet'?"),
        (
            lambda r: r["common"]["model"]["kwargs"].update(base_chanels=8),
            "common.model.kwargs.base_chanels",
            "unknown option; did you mean 'base_channels'?",
        ),
        (
            lambda r: r["common"]["model"]["kwargs"].update(encoder="resnet19"),
            "common.model.kwargs.encoder",
            "did you mean 'resnet18'?",
        ),
        (lambda r: r["common"]["strategy"].update(name="sequental"), "common.strategy.name", "did you mean 'sequential'?"),
        (lambda r: r["common"]["strategy"].update(kwargs={"cycles": 0}), "common.strategy.kwargs", "cycles must be at least 1"),
        (
            lambda r: r["common"]["train"].update(optimizer={"name": "Adamw"}),
            "common.train.optimizer.name",
            "did you mean 'AdamW'?",
        ),
        (
            lambda r: r["common"]["train"].update(loss={"name": "explog", "kwargs": {"gama": 1}}),
            "common.train.loss.kwargs.gama",
            "did you mean 'gamma'?",
        ),
        (
            lambda r: r["all_tasks_datasets"][1]["kwargs"].update(img_size="big"),
            "all_tasks_datasets[1] (merged over common.dataset).kwargs.img_size",
            "expected a list or null, got 'big'",
        ),
        (
            lambda r: r["common"]["dataset"]["kwargs"].update(val_fracton=0.1),
            "all_tasks_datasets[0] (merged over common.dataset).kwargs.val_fracton",
            "unknown option; did you mean 'val_fraction'? (allowed: use_roi, folder, root_path, img_size,",
        ),
        (
            lambda r: r["all_tasks_datasets"][2]["kwargs"].update(folder="Domain9"),
            "all_tasks_datasets[2].kwargs.folder",
            "Domain9' does not exist",
        ),
        (lambda r: r["current_tasks"].update(task_ids=[1, 4]), "current_tasks.task_ids[1]", "task id 4 is not in all_tasks_datasets"),
        (lambda r: r["current_tasks"].update(task_ids=[]), "current_tasks.task_ids", "is empty"),
        (lambda r: r["current_tasks"].update(task_ids=[1, 1]), "current_tasks.task_ids", "lists a site twice"),
        (
            lambda r: r["current_tasks"]["task_confs"].update({3: {}}),
            "current_tasks.task_confs.3",
            "is not one of current_tasks.task_ids",
        ),
        (
            lambda r: r["current_tasks"]["task_confs"][2]["checkpoint"].update(resume="yes"),
            "current_tasks.task_confs.2.checkpoint.resume",
            "expected true or false, got 'yes'",
        ),
        (lambda r: r["all_tasks_datasets"][0].pop("task_name"), "all_tasks_datasets[0].task_name", "required key is missing"),
        (lambda r: r.pop("current_tasks"), "current_tasks", "required key is missing"),
    ],
)
def test_each_mistake_is_one_error_naming_its_key_path(raw, edit, key_path, message):
    raw = copy.deepcopy(raw)
    edit(raw)
    error = error_of(raw)
    assert error.key_path == key_path
    assert message in error.problem


def test_load_config_names_the_file(tmp_path, raw):
    raw["common"]["num_workers"] = "two"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"bad\.yaml: common\.num_workers: expected an integer, got 'two'"):
        load_config(path)


def test_config_names_resolve_under_configs_and_unknown_names_are_suggested():
    path, name = resolve_config_path("demo/sequential")
    assert path == PACKAGED_CONFIGS / "demo" / "sequential.yaml" and name == "demo/sequential"
    assert resolve_config_path(str(path)) == (path, "demo/sequential")
    with pytest.raises(FileNotFoundError, match="did you mean 'demo/sequential'"):
        resolve_config_path("demo/sequentail")


def test_every_shipped_config_is_valid_or_only_lacks_the_users_data():
    for path in sorted(PACKAGED_CONFIGS.rglob("*.yaml")):
        try:
            config = load_config(path)
        except ConfigError as error:  # real data sets: the user fills in root_path
            assert error.key_path.endswith(("kwargs.root_path", "kwargs.folder")), error
            assert "does not exist" in error.problem
        else:
            assert config.tasks


# --- options inherited through **kwargs ---------------------------------------------------------


class Parent:
    """Typed options: ``size`` required, ``scale`` and ``mode`` with defaults."""

    def __init__(self, split: str, *, size: int, scale: float = 1.0, mode: Literal["fast", "exact"] = "fast") -> None:
        self.split, self.size, self.scale, self.mode = split, size, scale, mode


class Child(Parent):
    """Its own option ``depth``; overrides the default of ``scale``; passes the rest on."""

    def __init__(self, split: str, *, depth: int = 2, scale: float = 0.5, **kwargs: Any) -> None:
        self.depth = depth
        super().__init__(split, scale=scale, **kwargs)


class Sized(Child):
    """Gives the parent's required ``size`` a default."""

    def __init__(self, split: str, *, size: int = 8, **kwargs: Any) -> None:
        super().__init__(split, size=size, **kwargs)


class Inherits(Sized):
    """No ``__init__`` of its own: Sized's is the one it uses."""


class Keeper(Parent):
    """Keeps its ``**extra`` instead of passing them on: any other option is accepted."""

    def __init__(self, split: str, *, size: int = 1, **extra: Any) -> None:
        self.extra = extra
        super().__init__(split, size=size)


@pytest.mark.parametrize(
    "target, kwargs, key_path, message",
    [
        (Child, {"size": 1, "dept": 3}, "m.kwargs.dept", "unknown option; did you mean 'depth'? (allowed: depth, scale, size, mode)"),
        (Child, {"size": 1, "mod": "exact"}, "m.kwargs.mod", "unknown option; did you mean 'mode'? (allowed: depth, scale, size, mode)"),
        (Inherits, {"sise": 1}, "m.kwargs.sise", "did you mean 'size'? (allowed: size, depth, scale, mode)"),
        (Child, {"size": "big"}, "m.kwargs.size", "expected an integer, got 'big'"),
        (Child, {"size": 1, "mode": "exakt"}, "m.kwargs.mode", "expected 'fast' or 'exact', got 'exakt'; did you mean 'exact'?"),
        (Child, {"size": 1, "depth": 2.5}, "m.kwargs.depth", "expected an integer, got 2.5"),
        (Keeper, {"size": "big", "anything": 1}, "m.kwargs.size", "expected an integer, got 'big'"),
        (Child, {}, "m.kwargs.size", "required option is missing"),
        (Child, {"depth": 3}, "m.kwargs.size", "required option is missing"),
        (Child, {"size": 1, "scale": 2, "mode": "exact", "depth": 0}, None, None),
        (Sized, {}, None, None),
        (Inherits, {"scale": 0.1}, None, None),
        (Keeper, {"anything": [1, 2]}, None, None),
    ],
)
def test_options_follow_kwargs_into_the_parent(target, kwargs, key_path, message):
    if key_path is None:
        check_kwargs(target, kwargs, "m.kwargs", supplied=("split",))
        target("train", **kwargs)  # what the config layer accepts, the class accepts
        return
    with pytest.raises(ConfigError) as info:
        check_kwargs(target, kwargs, "m.kwargs", supplied=("split",))
    assert info.value.key_path == key_path
    assert message in info.value.problem


def test_a_child_overrides_a_parent_default_and_the_declaring_class_types_an_option():
    assert defaults(Parent) == {"scale": 1.0, "mode": "fast"}
    assert defaults(Child) == {"depth": 2, "scale": 0.5, "mode": "fast"}
    assert defaults(Sized) == defaults(Inherits) == {"size": 8, "depth": 2, "scale": 0.5, "mode": "fast"}
    options = schema(Child).options
    assert [options[name].owner for name in ("split", "depth", "scale", "size", "mode")] == [Child, Child, Child, Parent, Parent]
    assert options["mode"].hint == Literal["fast", "exact"] and options["size"].required
    built = Child("train", size=3)  # the defaults the schema reports are the ones that apply
    assert (built.depth, built.scale, built.mode) == (2, 0.5, "fast")
    assert not schema(Child).open and schema(Keeper).open


def test_a_function_with_kwargs_accepts_any_other_option():
    def build(width: int, **extra: Any) -> None:
        """A factory that keeps unknown options."""

    check_kwargs(build, {"width": 2, "colour": "red"}, "f")
    with pytest.raises(ConfigError, match=r"f\.width: expected an integer"):
        check_kwargs(build, {"width": "2"}, "f")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"replay_fracton": 0.3}, r"k\.replay_fracton: unknown option; did you mean 'replay_fraction'\? \(allowed: cycles, z_dim, "),
        ({"z_dim": "wide"}, r"k\.z_dim: expected an integer, got 'wide'"),
        ({"cycles": 1.5}, r"k\.cycles: expected an integer, got 1\.5"),
    ],
)
def test_an_options_class_takes_the_forwarded_options(kwargs, message):
    from siteflow.config.validation import check_kwargs
    from siteflow.strategies.relay import RelayStrategy

    check_kwargs(RelayStrategy, {"cycles": 2, "replay_fraction": 0.25, "gan_lr": 1e-4}, "k")  # own and options-class options
    with pytest.raises(ConfigError, match=message):
        check_kwargs(RelayStrategy, kwargs, "k")
