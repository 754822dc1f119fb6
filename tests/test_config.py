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
    assert [t.task_id for t in config.site_runs] == [2, 1]
    second, first = config.site_runs
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
            "unknown option; did you mean 'val_fraction'? (allowed: use_roi, folder, augmentation, patch_size,",
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
            if "run the pre-training that writes them first" in error.problem:  # fine-tuning: sslfl/pretrain_* not run yet
                assert error.key_path == "common.model.kwargs", error
                continue
            assert error.key_path.endswith(("kwargs.root_path", "kwargs.folder")), error
            assert "does not exist" in error.problem
        else:
            assert config.site_runs


# --- values, sites, folders and parts refused before any training -------------------------------


def train_of(raw: dict, site: int | None = None) -> dict:
    """``common.train``, or site ``site``'s ``train`` override (created if need be)."""
    if site is None:
        return raw["common"]["train"]
    return raw["current_tasks"]["task_confs"].setdefault(site, {}).setdefault("train", {})


def checkpoint_of(raw: dict, site: int) -> dict:
    """Site ``site``'s ``checkpoint`` entry (created if need be)."""
    return raw["current_tasks"]["task_confs"].setdefault(site, {}).setdefault("checkpoint", {})


def self_containing(raw: dict) -> None:
    raw["common"]["model"]["kwargs"]["x"] = raw["common"]["model"]


def alias_bomb(raw: dict) -> None:
    """Nine levels of nine references to the level below: 9**9 values, 90 objects."""
    level: list = [1.0] * 9
    for _ in range(8):
        level = [level] * 9
    raw["common"]["train"]["loss"] = {"name": "explog", "kwargs": {"class_weights": level}}


def deep(raw: dict) -> None:
    nested: list = []
    for _ in range(40):
        nested = [nested]
    raw["common"]["model"]["kwargs"]["x"] = nested


@pytest.mark.parametrize(
    "edit, key_path, message",
    [
        (
            lambda r: r["common"]["train"].update(loss={"name": "explog", "kwargs": {"class_weights": [1.0, float("nan"), 2.0]}}),
            "common.train.loss.kwargs.class_weights[1]",
            "is nan: only finite numbers are allowed",
        ),
        (lambda r: r["common"]["dataset"]["kwargs"].update(root_path="a\x00b"), "common.dataset.kwargs.root_path", "control character"),
        (self_containing, "common.model.kwargs.x", "contains itself"),
        (alias_bomb, "common.train.loss.kwargs.class_weights[0][0][0]", "holds more than 100000 values"),
        (deep, "common.model.kwargs.x" + "[0]" * 28, "nested more than 32 levels deep"),
        (lambda r: r["common"].update(seed=-1), "common.seed", "must be between 0 and 2147483647, got -1"),
        (lambda r: r["common"].update(num_workers=-2), "common.num_workers", "must be at least 0"),
        (lambda r: r["all_tasks_datasets"][0].update(task_id=-1), "all_tasks_datasets[0].task_id", "must be between 0"),
        # optimizers and schedulers: ranges, then what torch refuses when it builds and steps them
        (lambda r: train_of(r)["optimizer"]["kwargs"].update(lr=0), "common.train.optimizer.kwargs.lr", "must be greater than 0, got 0"),
        (
            lambda r: train_of(r, 2).update(optimizer={"name": "SGD", "kwargs": {"lr": -0.1}}),
            "current_tasks.task_confs.2.train.optimizer.kwargs.lr",
            "must be greater than 0, got -0.1",
        ),
        (lambda r: train_of(r)["optimizer"]["kwargs"].update(momentum=1.5), "common.train.optimizer.kwargs.momentum", "in [0, 1)"),
        (
            lambda r: train_of(r).update(optimizer={"name": "Adam", "kwargs": {"betas": [0.9, 1.0]}}),
            "common.train.optimizer.kwargs.betas[1]",
            "in [0, 1), got 1.0",
        ),
        (lambda r: train_of(r)["optimizer"]["kwargs"].update(weight_decay=-1), "common.train.optimizer.kwargs.weight_decay", "at least 0"),
        (lambda r: train_of(r)["optimizer"]["kwargs"].update(params=[1]), "common.train.optimizer.kwargs.params", "set by siteflow"),
        (
            lambda r: train_of(r).update(optimizer={"name": "SparseAdam"}),
            "common.train.optimizer",
            "torch refuses these settings: RuntimeError: SparseAdam does not support dense gradients",
        ),
        (
            lambda r: train_of(r).update(scheduler={"name": "CosineAnnealingLR", "kwargs": {"T_max": 0}}),
            "common.train.scheduler.kwargs.T_max",
            "must be at least 1, got 0",
        ),
        (
            lambda r: train_of(r, 1).update(scheduler={"name": "StepLR", "kwargs": {"step_size": 0}}),
            "current_tasks.task_confs.1.train.scheduler.kwargs.step_size",
            "must be at least 1",
        ),
        (
            lambda r: train_of(r).update(scheduler={"name": "StepLR", "kwargs": {"step_size": 2, "gamma": 0}}),
            "common.train.scheduler.kwargs.gamma",
            "must be greater than 0",
        ),
        (
            lambda r: train_of(r).update(scheduler={"name": "ReduceLROnPlateau"}),
            "common.train.scheduler",
            "missing 1 required positional argument: 'metrics'",
        ),
        (
            lambda r: train_of(r).update(scheduler={"name": "OneCycleLR", "kwargs": {"max_lr": 0.1, "total_steps": 2}}),
            "common.train.scheduler",
            "Tried to step 3 times. The specified number of total steps is 2",
        ),
        (
            lambda r: train_of(r).update(scheduler={"name": "ExponentialLR", "kwargs": {"gamma": 1e300}}),
            "common.train.scheduler",
            "makes the learning rate inf within 4 epochs",
        ),
        (lambda r: train_of(r).update(scheduler={"name": "LRScheduler"}), "common.train.scheduler.name", "unknown torch.optim.lr_scheduler class"),
        (lambda r: train_of(r).update(optimizer={"name": "Optimizer"}), "common.train.optimizer.name", "unknown torch.optim class"),
        (lambda r: train_of(r).update(batch_size=0), "common.train.batch_size", "must be at least 1"),
        (lambda r: train_of(r).update(gradient_clip_val=0), "common.train.gradient_clip_val", "must be greater than 0"),
        (lambda r: train_of(r).update(precision="32-tru"), "common.train.precision", "did you mean '32-true'?"),
        (lambda r: train_of(r, 2).update(epochs=[7]), "current_tasks.task_confs.2.train.epochs", "expected an integer"),
        (lambda r: r["current_tasks"]["task_confs"][2].update(train=[1]), "current_tasks.task_confs.2.train", "expected a mapping"),
        # components built at validation: their own checks speak
        (
            lambda r: train_of(r).update(loss={"name": "explog", "kwargs": {"gamma": -1}}),
            "common.train.loss",
            "gamma must be positive, got -1",
        ),
        (lambda r: r["common"]["model"]["kwargs"].update(depth=0), "common.model.kwargs", "depth must be between 1 and 8, got 0"),
        (lambda r: r["common"]["model"]["kwargs"].update(depth=12), "common.model.kwargs", "depth must be between 1 and 8, got 12"),
        (lambda r: r["common"]["model"]["kwargs"].update(base_channels=0), "common.model.kwargs", "base_channels must be at least 1"),
        (
            lambda r: train_of(r).update(loss={"name": "explog", "kwargs": {"class_weights": [1.0, 2.0]}}),
            "common.train.loss.kwargs.class_weights",
            "has 2 values, but the data has 3 classes ['background', 'disc_rim', 'optic_cup']",
        ),
        (
            lambda r: r["common"]["model"]["kwargs"].update(num_classes=2),
            "common.model.kwargs",
            "the data has 3 channels and 3 classes",
        ),
        (
            lambda r: r["common"]["strategy"].update(name="local", kwargs={"cycles": 2}),
            "common.strategy.kwargs.cycles",
            "unknown option (LocalStrategy takes no options)",
        ),
        (
            lambda r: r["common"]["strategy"].update(name="fedavg", kwargs={"min_sites": 3}),
            "common.strategy.kwargs.min_sites",
            "is 3, but the study trains only 2 sites",
        ),
        (
            lambda r: r["common"]["strategy"].update(name="joint", kwargs={"save_dir": "../elsewhere"}),
            "common.strategy.kwargs.save_dir",
            "is not a folder under the run's checkpoints/",
        ),
        (
            lambda r: (r["common"]["strategy"].update(name="relay"), r["common"]["dataset"]["kwargs"].update(img_size=[64, 32])),
            "common.strategy",
            "the solver's input is 64x32: set common.strategy.kwargs.replay_size (a power of two <= 32)",
        ),
        (lambda r: r["common"]["dataset"]["kwargs"].update(img_size=[0, 64]), "all_tasks_datasets[0] (merged over common.dataset).kwargs", "img_size must be"),
        (lambda r: r["common"]["dataset"]["kwargs"].update(split="test"), "all_tasks_datasets[0] (merged over common.dataset).kwargs.split", "set by siteflow"),
        # a loss must compare the logits with what the task's data holds
        (
            lambda r: r["common"]["train"].update(loss={"name": "bce"}),
            "common.train.loss.name",
            "loss 'bce' compares the logits with label vectors; this study's SegmentationTask needs class indices or "
            "label maps: choose one of ['ce', 'dice', 'dice_ce', 'explog', 'focal']",
        ),
        (
            lambda r: r["current_tasks"]["task_confs"][2]["train"].update(loss={"name": "masked_mse"}),
            "current_tasks.task_confs.2.train.loss.name",
            "loss 'masked_mse' compares the logits with patches",
        ),
        # every site of one study: the same kind of data
        (
            lambda r: r["all_tasks_datasets"][1].update(name="synthetic_cxr", kwargs={"folder": "site1"}),
            "all_tasks_datasets[1]",
            (
                "site 'two' holds multilabel data of classes ['cardiomegaly', 'pleural_effusion'] with 1 input channels, "
                "site 'one' holds segmentation data"
            ),
        ),
        (
            lambda r: r["all_tasks_datasets"][2].update(name="synthetic_vessels", kwargs={"folder": "DRIVE"}),
            "all_tasks_datasets",
            "site 'three' has classes ('background', 'vessel')",
        ),
        (
            lambda r: r["current_tasks"]["task_confs"][2].update(dataset={"name": "synthetic_vessels", "kwargs": {"folder": "DRIVE"}}),
            "current_tasks.task_confs.2.dataset",
            "site 'two' would train on segmentation data of classes ['background', 'vessel']",
        ),
        # site names
        (lambda r: r["all_tasks_datasets"][2].update(task_name="one"), "all_tasks_datasets[2].task_name", "'one' is taken by another site"),
        (
            lambda r: (r["all_tasks_datasets"][0].update(task_name="site 1"), r["all_tasks_datasets"][1].update(task_name="site_1")),
            "all_tasks_datasets[1].task_name",
            "site names 'site 1' and 'site_1' both become 'site_1' in file names",
        ),
        (lambda r: r["all_tasks_datasets"][1].update(task_name=" "), "all_tasks_datasets[1].task_name", "is empty"),
        (lambda r: r["all_tasks_datasets"][1].update(task_name="../two"), "all_tasks_datasets[1].task_name", "holds a path"),
        (lambda r: r["all_tasks_datasets"][1].update(task_name="a/b"), "all_tasks_datasets[1].task_name", "holds a path"),
        (lambda r: r["all_tasks_datasets"][1].update(task_name="."), "all_tasks_datasets[1].task_name", "holds a path"),
        (lambda r: r["all_tasks_datasets"][1].update(task_name="two\n"), "all_tasks_datasets[1].task_name", "control character '\\n'"),
        # checkpoint folders and files
        (
            lambda r: checkpoint_of(r, 1).update(save="./b/"),
            "current_tasks.task_confs.1.checkpoint.save",
            "'b': two sites save into the same folder (see current_tasks.task_confs.2.checkpoint.save)",
        ),
        (
            lambda r: checkpoint_of(r, 2).update(save="task_1"),
            "current_tasks.task_confs.1.checkpoint.save",
            "'task_1': two sites save into the same folder",
        ),
        (lambda r: checkpoint_of(r, 1).update(save="a/../../x"), "current_tasks.task_confs.1.checkpoint.save", "is not a folder under"),
        (lambda r: checkpoint_of(r, 1).update(save=".."), "current_tasks.task_confs.1.checkpoint.save", "is not a folder under"),
        (lambda r: checkpoint_of(r, 1).update(save="a/.."), "current_tasks.task_confs.1.checkpoint.save", "is not a folder under"),
        (lambda r: checkpoint_of(r, 1).update(save="/tmp/x"), "current_tasks.task_confs.1.checkpoint.save", "is an absolute path"),
        (lambda r: checkpoint_of(r, 1).update(load=""), "current_tasks.task_confs.1.checkpoint.load", "is empty"),
        (lambda r: checkpoint_of(r, 1).update(load="/"), "current_tasks.task_confs.1.checkpoint.load", "'/' is a folder"),
        (
            lambda r: r["current_tasks"]["task_confs"].update({"2": {}}),
            "current_tasks.task_confs.2",
            "is the second entry of task 2",
        ),
    ],
)
def test_values_sites_folders_and_parts_are_checked_before_training(raw, edit, key_path, message):
    raw = copy.deepcopy(raw)
    edit(raw)
    error = error_of(raw)
    assert error.key_path == key_path
    assert message in error.problem


def test_checkpoint_folders_are_normalised_and_a_deployed_run_counts_the_study_sites(raw):
    raw["current_tasks"]["task_confs"][2]["checkpoint"] = {"save": "./sites//b/", "load": "../site1/handover.safetensors"}
    assert parse(raw).site_runs[0].checkpoint.save == "sites/b"
    raw["common"]["strategy"] = {"name": "fedavg", "kwargs": {"min_sites": 3}}
    raw["current_tasks"] = {"task_ids": [1]}  # a deployed site of a federation of three
    assert parse(raw).deployed


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "case.yaml"
    path.write_bytes(data)
    return path


def alias_bomb_text(levels: int = 9) -> str:
    lines = ["a0: &a0 [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "data, key_path, message",
    [
        (b"common: {seed: 1}\n\xff\xfe\n", "<file>", "is not UTF-8 text: byte 0xff at offset 18"),
        (b"common: [1\n", "<file>", "not valid YAML"),
        (b"common: {}\ncommon: {}\n", "<file>", "found the key 'common' twice"),
        (b"common: " + b"[" * 5000 + b"]" * 5000 + b"\n", "<file>", "nested more than 32 levels deep"),
        (alias_bomb_text().encode(), "a5", "holds more than 100000 values"),
        (b"common: &c {x: *c}\n", "common.x", "contains itself"),
        (b"- common\n", "<top level>", "expected a mapping"),
        (b"", "<top level>", "expected a mapping"),
        (b"common: !!python/object/apply:os.system [ls]\n", "<file>", "could not determine a constructor"),
    ],
)
def test_a_file_that_is_no_config_is_one_error_naming_it(tmp_path, data, key_path, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == key_path
    assert message in info.value.problem
    assert str(path) in str(info.value)


def test_yaml_anchors_aliases_and_merge_keys_still_share_values(tmp_path, raw):
    text = yaml.safe_dump(raw, sort_keys=False)
    text = text.replace("  train:\n", "  train: &train\n", 1) + "\nx: *train\n"
    with pytest.raises(ConfigError, match=r"case\.yaml: x: unknown key"):
        load_config(write(tmp_path, text.encode()))
    shared = text.replace("\nx: *train\n", "\n").replace("task_confs:\n", "task_confs:\n    1: {train: {<<: *train, epochs: 9}}\n", 1)
    config = load_config(write(tmp_path, shared.encode()))
    assert [t.train.epochs for t in config.site_runs] == [7, 9]


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


def test_a_task_that_declares_no_loss_targets_takes_any_loss_and_one_that_does_is_checked():
    from siteflow.config.components import _check_loss_fits

    class PluginTask:  # a plug-in task that predates `loss_targets`
        loss_targets: tuple[str, ...] = ()

    class ImageClasses:
        loss_targets = ("class_indices",)

    for name in ("bce", "masked_mse", "dice", "ce"):
        _check_loss_fits(PluginTask(), name, "common.train.loss.name")
    _check_loss_fits(ImageClasses(), "ce", "common.train.loss.name")
    with pytest.raises(ConfigError) as refused:
        _check_loss_fits(ImageClasses(), "dice", "common.train.loss.name")
    assert str(refused.value) == (
        "common.train.loss.name: loss 'dice' compares the logits with label maps; this study's ImageClasses "
        "needs class indices: choose one of ['ce', 'focal']"
    )
