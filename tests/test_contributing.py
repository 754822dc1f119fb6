"""CONTRIBUTING.md's examples, run for real.

Every ```python block of CONTRIBUTING.md whose line before is ``<!-- example: NAME -->`` is
saved as ``my_package/NAME.py`` (the file the guide says it is) and imported by the tests that
use it; what it registers is removed afterwards. Each example is then used end to end on tiny
data: validated by the config layer (and its messages for wrong options checked), trained and
tested by the engine, its outputs and weights checked.
"""

from __future__ import annotations

import ast
import csv
import importlib
import json
import re
import sys
import tomllib
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from experiments import tiny_config
from siteflow.config import ConfigError, load_config, parse_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import DATASETS, LOSSES, MODELS, REGISTRIES, STRATEGIES, TASKS  # noqa: F401 (the examples are looked up by registry name)
from siteflow.datasets.base import SiteDataset, Split
from siteflow.datasets.pooling import build_dataset
from siteflow.datasets.spec import DataSpec
from siteflow.engine.predict import predict_run
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.base import Recording, Relay, SiteTraining, Storage
from siteflow.strategies.federated import ROUND_STATE

GUIDE = Path(__file__).resolve().parent.parent / "CONTRIBUTING.md"
MARKED = re.compile(r"^<!-- example: (\w+) -->\n```python\n(.*?)^```$", re.M | re.S)
PACKAGE = "my_package"

EXAMPLES = {  # module -> (registry, name it registers)
    "my_lesions": ("DATASETS", "my_lesions"),
    "my_tiny_net": ("MODELS", "my_tiny_net"),
    "my_focal": ("LOSSES", "my_focal"),
    "my_classification": ("TASKS", "my_classification"),
    "my_oneshot": ("STRATEGIES", "my_oneshot"),
    "my_trimmed_mean": ("STRATEGIES", "my_trimmed_mean"),
}
LAYERS = (
    ("core",),
    ("config", "handover"),
    ("datasets", "models", "losses", "metrics", "kernels"),
    ("tasks",),
    ("strategies",),
    ("engine",),
    ("deploy", "cli"),
)
KIND_LAYER = {"DATASETS": 2, "MODELS": 2, "LOSSES": 2, "TASKS": 3, "STRATEGIES": 4}


def guide_examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in MARKED.finditer(GUIDE.read_text()):
        assert match[1] not in found, f"two examples are named {match[1]}"
        found[match[1]] = match[2]
    return found


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A folder holding ``my_package/<example>.py`` for every runnable example."""
    folder = tmp_path_factory.mktemp("examples")
    (folder / PACKAGE).mkdir()
    (folder / PACKAGE / "__init__.py").write_text("")
    for name, code in guide_examples().items():
        (folder / PACKAGE / f"{name}.py").write_text(code)
    return folder


@pytest.fixture
def use(package, monkeypatch):
    """``use(*examples)`` imports the examples (registering their classes); afterwards every
    name registered during the test is removed again and the modules are forgotten."""
    monkeypatch.syspath_prepend(str(package))
    before = {registry.kind: set(registry.names()) for registry in REGISTRIES}  # the built-ins loaded: only the test's are removed

    def load(*names: str) -> list:
        modules = []
        for name in names:
            registry_name, registered = EXAMPLES[name]
            registry = globals()[registry_name]
            assert registered not in registry, f"{registered!r} is registered already: the example's name clashes"
            modules.append(importlib.import_module(f"{PACKAGE}.{name}"))
            assert registry.get(registered).__module__ == f"{PACKAGE}.{name}"
        return modules

    try:
        yield load
    finally:
        for registry in REGISTRIES:
            for name in set(registry.names()) - before[registry.kind]:
                registry.unregister(name)
        for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[module]


def config_error(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, name="example", source=Path("example.yaml"))
    return caught.value


# -- the guide itself --------------------------------------------------------------------------


def test_the_guide_marks_every_example_as_runnable():
    assert set(guide_examples()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_is_one_file_registering_one_class_importing_no_higher_layer(name):
    code = guide_examples()[name]
    tree = ast.parse(code)
    registrations = [
        (decorator.func.value.id, decorator.args[0].value, node)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", None) == "register"
    ]
    assert [(r, n) for r, n, _ in registrations] == [EXAMPLES[name]]
    registry, _, cls = registrations[0]
    assert ast.get_docstring(cls), f"{cls.name} has no docstring"
    if registry in ("DATASETS", "MODELS", "LOSSES"):  # what goes in and out, with shapes
        documented = " ".join(ast.get_docstring(n) or "" for n in ast.walk(cls) if isinstance(n, (ast.ClassDef, ast.FunctionDef)))
        assert re.search(r"\((N|\d+), ", documented), f"{cls.name}'s docstrings give no tensor shape"
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    for module in imported:
        parts = module.split(".")
        if parts[0] == "siteflow":
            layer = next(i for i, packages in enumerate(LAYERS) if parts[1] in packages)
            assert layer <= KIND_LAYER[registry], f"{name} ({registry}) imports {module}, a higher layer"
        assert parts[0] not in ("pickle", "dill"), f"{name} imports {module}"
    assert "torch.load" not in code


# -- a dataset ---------------------------------------------------------------------------------


def write_lesions(root: Path, hospital: str, seed: int, *, train: int = 5, test: int = 2, size: int = 16) -> None:
    """Grey images with a bright disc and their masks, in the example dataset's layout."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for part, count in (("train", train), ("test", test)):
        for index in range(count):
            cy, cx = rng.integers(4, size - 4, 2)
            lesion = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(2, 4)) ** 2
            image = np.clip(60 + 120 * lesion + rng.normal(0, 10, lesion.shape), 0, 255).astype(np.uint8)
            for folder, array in (("images", image), ("masks", np.where(lesion, 255, 0).astype(np.uint8))):
                path = root / hospital / part / folder / f"{hospital}_{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)


def lesion_config(root: Path, model: str = "my_tiny_net", loss: str = "dice_ce") -> dict:
    return {
        "common": {
            "seed": 1,
            "num_workers": 0,
            "dataset": {"name": "my_lesions", "kwargs": {"root_path": str(root), "val_fraction": 0.4}},
            "model": {"name": model, "kwargs": {"width": 4} if model == "my_tiny_net" else {"base_channels": 4, "depth": 2}},
            "strategy": {"name": "local"},
            "train": {
                "epochs": 1,
                "batch_size": 2,
                "loss": {"name": loss},
                "optimizer": {"name": "Adam", "kwargs": {"lr": 0.01}},
                "log_every_n_steps": 1,
            },
        },
        "all_tasks_datasets": [
            {"task_id": 1, "task_name": "a", "kwargs": {"hospital": "a"}},
            {"task_id": 2, "task_name": "b", "kwargs": {"hospital": "b"}},
        ],
        "current_tasks": {"task_ids": [1, 2]},
    }


def test_the_dataset_example_reads_its_layout_describes_itself_and_trains(tmp_path, use):
    use("my_lesions", "my_tiny_net")
    root = tmp_path / "lesions"
    write_lesions(root, "a", seed=1)
    write_lesions(root, "b", seed=2)
    config = parse_config(lesion_config(root), name="lesions", source=tmp_path / "lesions.yaml")
    site = config.sites[0]
    assert site.dataset.kwargs == {"root_path": str(root), "val_fraction": 0.4, "hospital": "a"}
    train, val, test = (build_dataset(site, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3, 2, 2)
    assert not set(train.sample_ids) & set(val.sample_ids)
    item = test[1]
    assert item["id"] == "a_1"
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() < item["image"].max() <= 1.0
    mask = np.asarray(Image.open(root / "a" / "test" / "masks" / "a_1.png"))
    assert item["label"].dtype == torch.int64 and torch.equal(item["label"], torch.from_numpy((mask == 255).astype(np.int64)))

    # describe() reads no file: the folder need not exist
    spec = DATASETS.get("my_lesions").describe(root_path=str(tmp_path / "nowhere"), hospital="x", img_size=[8, 8])
    assert spec == DataSpec("segmentation", ("background", "lesion"), 1, (8, 8), None)

    summary = ExperimentRun(config, tmp_path / "run").execute()
    progress = json.loads((tmp_path / "run" / "results" / "progress.json").read_text())["stages"]
    assert [row["stage"] for row in progress] == ["a", "b"]
    assert all(0.0 <= row["values"][s]["dice"] <= 1.0 for row in progress for s in ("a", "b"))
    assert set(summary["dice"]["final_per_site"]) == {"a", "b"}
    weights = load_weights(tmp_path / "run" / "checkpoints" / "task_2" / "final.safetensors")
    assert weights["head.weight"].shape == (2, 4, 1, 1)  # two classes, from the dataset's DataSpec


def test_the_dataset_example_options_are_validated_before_training(tmp_path, use):
    use("my_lesions", "my_tiny_net")
    root = tmp_path / "lesions"
    write_lesions(root, "a", seed=1, train=2, test=1)

    raw = lesion_config(root)
    raw["all_tasks_datasets"][1]["kwargs"]["hospital"] = "c"
    error = config_error(raw)
    assert error.key_path == "all_tasks_datasets[1].kwargs.hospital"
    assert error.problem == f"data folder {str(root / 'c')!r} does not exist"

    raw = lesion_config(root)
    del raw["all_tasks_datasets"][0]["kwargs"]
    error = config_error(raw)
    assert error.key_path.endswith(".kwargs.hospital") and error.problem == "required option is missing"

    raw = lesion_config(root)
    raw["all_tasks_datasets"][0]["kwargs"] = {"hospitl": "a"}
    assert "unknown option; did you mean 'hospital'?" in config_error(raw).problem

    raw = lesion_config(root)  # an option of SiteDataset, reached through **kwargs
    raw["common"]["dataset"]["kwargs"]["val_fraction"] = "half"
    error = config_error(raw)
    assert error.key_path.endswith(".kwargs.val_fraction") and error.problem == "expected a number, got 'half'"


# -- a model, a loss, the strategies: the validator's messages ----------------------------------


def tiny_raw(tmp_path: Path, strategy: str, **overrides) -> dict:
    return yaml.safe_load(tiny_config(tmp_path, strategy, **overrides).read_text())


@pytest.mark.parametrize(
    "strategy, common, message",
    [
        ("local", {"model": {"name": "my_tiny_net", "kwargs": {"widht": 4}}},  # replaces the U-Net entry
         "common.model.kwargs.widht: unknown option; did you mean 'width'? (allowed: width)"),
        ("local", {"model": {"name": "my_tiny_net", "kwargs": {"width": 2.5}}},
         "common.model.kwargs.width: expected an integer, got 2.5"),
        ("local", {"train": {"loss": {"name": "my_focal", "kwargs": {"gamma": "high"}}}},
         "common.train.loss.kwargs.gamma: expected a number, got 'high'"),
        ("local", {"train": {"loss": {"name": "my_focus"}}},
         "common.train.loss.name: unknown loss 'my_focus'; did you mean 'my_focal'? (known: bce, "),
        ("my_oneshot", {"strategy": {"kwargs": {"weighting": "sample"}}},
         "common.strategy.kwargs.weighting: expected 'samples' or 'equal', got 'sample'; did you mean 'samples'?"),
        ("my_trimmed_mean", {"strategy": {"kwargs": {"trim": -1}}},
         "common.strategy.kwargs: trim must be non-negative, got -1"),
        ("my_trimmed_mean", {"strategy": {"kwargs": {"round": 2}}},  # fedavg's options, through **kwargs
         "common.strategy.kwargs.round: unknown option; did you mean 'rounds'? (allowed: trim, keep_local_norm, norm_statistics, "
         "rounds, local_epochs, weighting, min_sites, test_every, fraction, local_steps, schedule, keep_optimizer_state, central_dp, robust, "
         "enrolled_samples)"),
        ("my_trimmed_mean", {"strategy": {"kwargs": {"rounds": 0}}},
         "common.strategy.kwargs: rounds must be at least 1, got 0"),
    ],
)
def test_a_wrong_option_of_an_example_is_one_clear_config_error(tmp_path, use, strategy, common, message):
    use("my_tiny_net", "my_focal", "my_oneshot", "my_trimmed_mean")
    common = dict(common)
    model = common.pop("model", None)
    error = str(config_error(tiny_raw(tmp_path, strategy, model=model, common=common)))
    assert error.startswith(message), error


def test_the_example_options_that_are_right_pass(tmp_path, use):
    use("my_tiny_net", "my_focal", "my_trimmed_mean")
    raw = tiny_raw(
        tmp_path,
        "my_trimmed_mean",
        model={"name": "my_tiny_net", "kwargs": {"width": 4}},
        common={
            "strategy": {"kwargs": {"trim": 1, "rounds": 2, "keep_local_norm": True}},
            "train": {"loss": {"name": "my_focal", "kwargs": {"gamma": 1, "ignore_index": None}}},
        },
    )
    config = parse_config(raw, name="ok", source=tmp_path / "ok.yaml")
    assert config.strategy.kwargs == {"trim": 1, "rounds": 2, "keep_local_norm": True}
    strategy = STRATEGIES.get("my_trimmed_mean")(**config.strategy.kwargs)
    assert (strategy.trim, strategy.rounds, strategy.keep_local_norm, strategy.local_epochs) == (1, 2, True, 1)


# -- a loss ------------------------------------------------------------------------------------


def test_the_loss_example_is_cross_entropy_at_gamma_0_and_down_weights_easy_pixels(use):
    use("my_focal")
    focal = LOSSES.get("my_focal")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5), generator=generator)
    assert torch.allclose(focal(gamma=0.0)(logits, labels), F.cross_entropy(logits, labels))
    ce = F.cross_entropy(logits, labels, reduction="none")
    expected = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    value = focal(gamma=2.0)(logits, labels)
    assert torch.allclose(value, expected) and value < F.cross_entropy(logits, labels)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()

    ignored = labels.clone()
    ignored[0, :2] = 255
    assert torch.allclose(focal(gamma=0.0, ignore_index=255)(logits, ignored), F.cross_entropy(logits, ignored, ignore_index=255))
    images = torch.randn(4, 3, generator=generator)  # image-level logits (N, K), as the task example uses it
    assert torch.allclose(focal(gamma=0.0)(images, torch.tensor([0, 1, 2, 1])), F.cross_entropy(images, torch.tensor([0, 1, 2, 1])))
    with pytest.raises(ValueError, match="gamma must be non-negative"):
        focal(gamma=-1.0)


# -- a plain strategy (with the model and the loss) ---------------------------------------------


def test_the_strategy_example_averages_the_site_models_once(tmp_path, use):
    use("my_tiny_net", "my_focal", "my_oneshot")
    path = tiny_config(
        tmp_path,
        "my_oneshot",
        model={"name": "my_tiny_net", "kwargs": {"width": 4}},
        common={"strategy": {"kwargs": {"weighting": "equal"}}, "train": {"loss": {"name": "my_focal"}}},
    )
    run_dir = tmp_path / "run"
    summary = ExperimentRun(load_config(path), run_dir).execute()

    rows = json.loads((run_dir / "results" / "progress.json").read_text())["stages"]
    assert [(r["stage"], r["trained_site"]) for r in rows] == [("site1", "site1"), ("site2", "site2"), ("averaged", None)]
    assert rows[2]["weights"] == "checkpoints/averaged/final.safetensors"
    assert summary["stages"] == ["site1", "site2", "averaged"]
    assert set(summary["dice"]["final_per_site"]) == {"site1", "site2"}
    assert (run_dir / "results" / "site_matrix_dice.csv").is_file()

    first, second = (load_weights(run_dir / "checkpoints" / f"task_{i}" / "final.safetensors") for i in (1, 2))
    average = load_weights(run_dir / rows[2]["weights"])
    assert average.keys() == first.keys() and average["head.weight"].shape == (3, 4, 1, 1)
    for name, tensor in average.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (first[name] + second[name]) / 2, atol=1e-6), name
        else:
            assert torch.equal(tensor, first[name]), name
    assert not torch.allclose(first["body.0.weight"], second["body.0.weight"]), "the sites did not train apart"



class RoleView:
    """The members of ``run`` that ``roles`` declare, and nothing else."""

    def __init__(self, run: ExperimentRun, roles: set[type]) -> None:
        self._run = run
        self._members = {name for role in roles for name in [*vars(role), *getattr(role, "__annotations__", {})] if not name.startswith("_")}

    def __getattr__(self, name: str):
        if name not in self._members:
            raise AttributeError(f"{name} is in none of the roles the strategy names")
        return getattr(self._run, name)


def test_the_strategy_example_asks_the_run_only_for_the_roles_it_names(tmp_path, use):
    use("my_tiny_net", "my_focal", "my_oneshot")
    strategy = STRATEGIES.get("my_oneshot")(weighting="equal")
    context_type = typing.get_type_hints(type(strategy).run)["context"]
    roles = {SiteTraining, Recording, Relay, Storage} & set(context_type.__mro__)
    assert roles == {SiteTraining, Recording, Storage}  # it hands nothing over
    path = tiny_config(tmp_path, "my_oneshot", model={"name": "my_tiny_net", "kwargs": {"width": 4}},
                       common={"strategy": {"kwargs": {"weighting": "equal"}}, "train": {"loss": {"name": "my_focal"}}})
    run = ExperimentRun(load_config(path), tmp_path / "run")
    run.prepare()
    view = RoleView(run, roles)
    strategy.run(view)
    assert [(row.stage, row.trained_site) for row in run.folder.results] == [("site1", "site1"), ("site2", "site2"), ("averaged", None)]
    with pytest.raises(AttributeError, match="hand_over is in none of the roles"):
        view.hand_over

# -- a federated strategy ----------------------------------------------------------------------


def test_the_federated_example_takes_the_trimmed_mean_of_the_updates(tmp_path, use):
    use("my_trimmed_mean")
    config = load_config(tiny_config(tmp_path, "my_trimmed_mean", sites=3, common={"strategy": {"kwargs": {"rounds": 1}}}))
    strategy = STRATEGIES.get("my_trimmed_mean")(**config.strategy.kwargs)
    seen = []
    aggregate = strategy.aggregate

    def recording(round_number, global_weights, updates):
        result = aggregate(round_number, global_weights, updates)
        seen.append((updates, result))
        return result

    strategy.aggregate = recording
    run = ExperimentRun(config, tmp_path / "run", strategy=strategy)
    run.execute()

    ((updates, result),) = seen
    assert [u.site for u in updates] == ["site1", "site2", "site3"]
    saved, info = run.load_state(ROUND_STATE)
    assert info["round"] == 1
    final = load_weights(tmp_path / "run" / "checkpoints" / "global" / "final.safetensors")
    differs_from_fedavg = False
    for name, tensor in result.items():
        stacked = torch.stack([u.weights[name] for u in updates])
        if tensor.is_floating_point():  # with three sites and trim=1: the median, entry by entry
            assert torch.equal(tensor, stacked.median(0).values), name
            differs_from_fedavg |= not torch.allclose(tensor, stacked.mean(0), atol=1e-6)
        assert torch.equal(saved[f"global/{name}"], tensor) and torch.equal(final[name], tensor), name
    assert differs_from_fedavg
    rows = json.loads((tmp_path / "run" / "results" / "progress.json").read_text())["stages"]
    assert [row["stage"] for row in rows] == ["round1"]

    with pytest.raises(ValueError, match=r"trim=1 needs more than 2 updates, got 2"):
        STRATEGIES.get("my_trimmed_mean")(trim=1).aggregate(2, result, updates[:2])


# -- a task ------------------------------------------------------------------------------------


class BrightnessDataset(SiteDataset):
    """Dark or bright noise images for the task example, in memory.

    Item: ``{"image": float32 (1, 16, 16), "label": int64 () 0 (dark) or 1 (bright), "id": str}``.

    Args:
        site_seed: varies the noise between sites.
        **kwargs: the options of :class:`SiteDataset`.
    """

    task = "my_classification"
    SIZES = {"train": 8, "val": 4, "test": 6}

    def __init__(self, split: Split, *, site_seed: int = 0, **kwargs) -> None:
        super().__init__(split, **kwargs)
        generator = torch.Generator().manual_seed(100 * site_seed + list(self.SIZES).index(split))
        self.labels = torch.arange(self.SIZES[split]) % 2
        noise = torch.randn(len(self.labels), 1, 16, 16, generator=generator)
        self.images = 0.3 * noise + (2.0 * self.labels - 1).view(-1, 1, 1, 1)

    @classmethod
    def _spec(cls, options: dict) -> DataSpec:
        return DataSpec(cls.task, ("dark", "bright"), 1, (16, 16), None)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        row = self._row(index)
        return {"image": self.images[row], "label": self.labels[row], "id": f"{self.split}_{row}"}


@pytest.mark.slow
def test_the_task_example_trains_tests_and_predicts(tmp_path, use):
    use("my_classification", "my_focal")
    DATASETS.register("contributing_brightness")(BrightnessDataset)  # removed by `use`
    raw = {
        "common": {
            "seed": 3,
            "dataset": {"name": "contributing_brightness", "kwargs": {"root_path": str(tmp_path)}},
            "model": {"name": "resnet_classifier", "kwargs": {"depth": 18}},
            "strategy": {"name": "local"},
            "train": {"epochs": 1, "batch_size": 4, "loss": {"name": "my_focal", "kwargs": {"gamma": 0.0}},
                      "optimizer": {"name": "Adam", "kwargs": {"lr": 0.001}}, "log_every_n_steps": 1},
        },
        "all_tasks_datasets": [
            {"task_id": 1, "task_name": "site1", "kwargs": {"site_seed": 1}},
            {"task_id": 2, "task_name": "site2", "kwargs": {"site_seed": 2}},
        ],
        "current_tasks": {"task_ids": [1, 2]},
    }
    config = parse_config(raw, name="classify", source=tmp_path / "classify.yaml")
    run = ExperimentRun(config, tmp_path / "run")
    assert type(run.task).__name__ == "ClassificationTask" and run.task.class_names == ("dark", "bright")
    summary = run.execute()
    assert summary["metrics"] == ["accuracy"]
    assert (tmp_path / "run" / "results" / "site_matrix_accuracy.csv").is_file()
    rows = json.loads((tmp_path / "run" / "results" / "progress.json").read_text())["stages"]
    assert [row["stage"] for row in rows] == ["site1", "site2"]

    folder = predict_run(config, tmp_path / "run")
    with open(folder / "samples.csv") as handle:
        samples = list(csv.DictReader(handle))
    with open(folder / "summary.csv") as handle:
        sites = list(csv.DictReader(handle))
    assert len(samples) == 2 * 2 * 6  # models (one per stage) x test sites x test images
    assert {s["label"] for s in samples} == {"0", "1"} and {s["pred"] for s in samples} <= {"0", "1"}
    assert len(sites) == 4
    for site in sites:
        mine = [s for s in samples if (s["model"], s["site"]) == (site["model"], site["site"])]
        correct = sum(s["pred"] == s["label"] for s in mine) / len(mine)
        assert float(site["accuracy"]) == pytest.approx(correct, abs=1e-6)
        # the sample-wise prediction agrees with the engine's test of the same weights
        row = next(r for r in rows if r["stage"] == site["model"])
        assert row["values"][site["site"]]["accuracy"] == pytest.approx(correct, abs=1e-6)


# -- registering through an entry point --------------------------------------------------------


def test_the_documented_entry_points_register_the_examples(tmp_path, use, monkeypatch):
    block = next(b for b in re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S) if "siteflow.plugins" in b)
    declared = tomllib.loads(block)["project"]["entry-points"]["siteflow.plugins"]
    assert declared and all(value == f"{PACKAGE}.{key}" and key in EXAMPLES for key, value in declared.items())
    dist_info = tmp_path / "my_package-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my_lesions" not in DATASETS and "my_focal" not in LOSSES

    root = tmp_path / "lesions"
    write_lesions(root, "a", seed=1, train=2, test=1)
    write_lesions(root, "b", seed=2, train=2, test=1)
    config = parse_config(lesion_config(root, model="unet", loss="my_focal"), name="plugin", source=tmp_path / "plugin.yaml")
    assert config.sites[1].dataset.name == "my_lesions" and config.site_runs[0].train.loss.name == "my_focal"
    assert DATASETS.get("my_lesions").__module__ == f"{PACKAGE}.my_lesions"
    assert LOSSES.get("my_focal").__module__ == f"{PACKAGE}.my_focal"
