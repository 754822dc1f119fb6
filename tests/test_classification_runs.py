"""The classification task trained end to end by every strategy that can train a classifier
(simulated, tiny settings), relay refused at validation, the stage outputs (confusion
matrices, partition.json), the shipped configs on synthetic data in their real layouts, and
paired comparisons of the new metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from siteflow.config import PACKAGED_CONFIGS, ConfigError, deep_merge, load_config
from siteflow.core.atomic import load_weights
from siteflow.datasets.classification import write_isic2019, write_medmnist
from siteflow.engine.predict import predict_run
from siteflow.engine.runner import ExperimentRun
from siteflow.reporting.compare import compare_runs
from siteflow.reporting.runs import read_run
from tests.experiments import tiny_config

ENCODER = {"img_size": [16, 16], "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
FEDERATED = {"rounds": 1, "local_epochs": 1}
STRATEGIES = {
    "local": {},
    "joint": {},
    "sequential": {},
    "ewc": {},
    "si": {},
    "lwf": {},
    "owm": {"max_fan_in": 8192},
    "fedavg": FEDERATED,
    "fedbn": {"name": "fedavg", **FEDERATED, "keep_local_norm": True},
    "fedprox": {**FEDERATED, "mu": 0.01},
    "fedper": {**FEDERATED, "personal_layers": ["head"]},
    "ditto": FEDERATED,
    "scaffold": {**FEDERATED, "train": {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.05}}}},
    "fedadam": FEDERATED,
    "central_dp": {"name": "fedavg", **FEDERATED, "weighting": "equal", "central_dp": {"noise_multiplier": 0.1, "clip_norm": 1.0}},
}


def classes_config(folder: Path, strategy: str, *, model: dict | None = None, train: dict | None = None, **kwargs) -> Path:
    """A tiny config over two synthetic lesion sites (12 training, 6 test images each, 16x16)."""
    name = kwargs.pop("name", strategy)
    folder.mkdir(parents=True, exist_ok=True)
    dataset = {"name": "synthetic_classes", "kwargs": {"root_path": str(folder.parent / "data"), "train_per_site": 12, "test_per_site": 6,
                                                       "native_size": [16, 16], "img_size": [16, 16], "val_fraction": 0.25}}
    path = tiny_config(folder, name, dataset=dataset, model=model or {"name": "resnet_classifier", "kwargs": {"depth": 18}},
                       common={"strategy": {"name": name, "kwargs": kwargs},
                               "train": {"loss": {"name": "ce", "kwargs": {"class_weights": "balanced"}}, **(train or {})}})
    raw = yaml.safe_load(path.read_text())
    raw["all_tasks_datasets"] = [{"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"site{i}"}} for i in (1, 2)]
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_trains_the_classifier(tmp_path: Path, strategy: str) -> None:
    options = dict(STRATEGIES[strategy])
    config = load_config(classes_config(tmp_path / "run", strategy, train=options.pop("train", None), **options))
    runner = ExperimentRun(config, tmp_path / "exps")
    summary = runner.execute()
    assert summary["metrics"] == ["balanced_accuracy", "accuracy", "macro_f1", "auroc", "kappa"]
    last = runner.results[-1]
    for site, values in last.values.items():
        assert 0.0 <= values["balanced_accuracy"] <= 1.0
        confusion = np.loadtxt(tmp_path / "exps" / "results" / "confusion" / last.stage.replace("/", "_") / f"{site}.csv",
                               delimiter=",", skiprows=1, usecols=range(1, 5))
        assert confusion.sum() == 6 and np.trace(confusion) / 6 == pytest.approx(values["accuracy"])
    assert (tmp_path / "exps" / "results" / "confusion" / last.stage.replace("/", "_") / "site1.png").is_file()


@pytest.mark.slow
def test_dp_sgd_trains_the_classifier(tmp_path: Path) -> None:
    model = {"name": "resnet_classifier", "kwargs": {"depth": 18, "norm": "group"}}
    dp = {"loss": {"name": "ce", "kwargs": {}},  # a mean of per-sample terms: no class weights under DP-SGD
          "dp_sgd": {"target_epsilon": 8.0, "delta": 1.0e-5, "max_grad_norm": 1.0, "accountant": "rdp"}}
    config = load_config(classes_config(tmp_path / "run", "fedavg", model=model, train=dp, **FEDERATED))
    summary = ExperimentRun(config, tmp_path / "exps").execute()
    spent = summary["privacy"]["dp_sgd"]
    assert set(spent) == {"site1", "site2"} and all(0 < site["epsilon"] <= 8.0 for site in spent.values())


@pytest.mark.slow
def test_fed_mae_fine_tuning_starts_from_the_pre_trained_encoder(tmp_path: Path) -> None:
    mae = {"name": "mae_vit", "kwargs": {**ENCODER, "decoder_hidden_size": 16, "decoder_num_layers": 1, "decoder_num_heads": 2}}
    pre = load_config(classes_config(tmp_path / "pre", "fedavg", model=mae, train={"loss": {"name": "masked_mse"}}, **FEDERATED))
    ExperimentRun(pre, tmp_path / "pre_exps").execute()
    weights = tmp_path / "pre_exps" / "checkpoints" / "global" / "final.safetensors"
    model = {"name": "vit_classifier", "kwargs": {**ENCODER, "pretrained": str(weights)}}
    runner = ExperimentRun(load_config(classes_config(tmp_path / "fine", "fedavg", model=model, **FEDERATED)), tmp_path / "fine_exps")
    runner.execute()
    initial, file = load_weights(runner.folder.checkpoints / "initial.safetensors"), load_weights(weights)
    encoder = [name for name in initial if name.startswith("vit.")]
    assert encoder and all(torch.equal(initial[name], file[name]) for name in encoder)


def test_relay_is_refused_at_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"common\.strategy: relay replays \(label map, image\) pairs .*\(ClassificationTask\) has no label maps"):
        load_config(classes_config(tmp_path / "run", "relay"))


def test_count_weights_are_refused_for_segmentation(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, "local", common={"train": {"loss": {"name": "ce", "kwargs": {"class_weights": "balanced"}}}})
    with pytest.raises(ConfigError, match=r"common\.train\.loss: kwargs\.class_weights: weights from the training counts"):
        load_config(path)


def shipped(family: str, name: str, tmp_path: Path, site_root: dict) -> Path:
    raw = yaml.safe_load((PACKAGED_CONFIGS / family / f"{name}.yaml").read_text())
    tiny = {"num_workers": 0, "dataset": {"kwargs": site_root}, "model": {"kwargs": {"depth": 18}},
            "train": {"epochs": 1, "batch_size": 4}}
    raw["common"] = deep_merge(raw["common"], tiny)
    if raw["common"]["strategy"]["name"] == "fedavg":
        raw["common"]["strategy"]["kwargs"]["rounds"] = 1
    path = tmp_path / f"{family}_{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["fedavg", "local", "joint"])
def test_shipped_isic2019_configs_validate_on_flambys_layout(tmp_path: Path, name: str) -> None:
    root = write_isic2019(tmp_path / "isic", per_center=6)
    config = load_config(shipped("isic2019", name, tmp_path, {"root_path": str(root), "img_size": [32, 32]}))
    assert [site.dataset.kwargs["center"] for site in config.sites] == [0, 1, 2, 3, 4, 5]


@pytest.mark.slow
def test_shipped_medmnist_config_writes_its_partition(tmp_path: Path) -> None:
    write_medmnist(tmp_path / "data" / "dermamnist.npz", counts=(400, 40, 100))
    kwargs = {"root_path": str(tmp_path / "data"), "partition": {"min_samples": 5}}
    config = load_config(shipped("medmnist", "dirichlet_fedavg", tmp_path, kwargs))
    runner = ExperimentRun(config, tmp_path / "exps")
    runner.execute()
    partition = json.loads((runner.folder.results_dir / "partition.json").read_text())
    assert partition["partition"]["scheme"] == "dirichlet" and partition["partition"]["num_sites"] == 10
    totals = np.sum([list(site["counts"]["train"].values()) for site in partition["sites"].values()], axis=0)
    totals += np.sum([list(site["counts"]["val"].values()) for site in partition["sites"].values()], axis=0)
    assert totals.sum() == 400 + 40  # val is MedMNIST's own part, cut with the same draw
    assert (runner.folder.results_dir / "partition.png").is_file()


@pytest.mark.slow
def test_predictions_and_paired_comparison_of_the_new_metrics(tmp_path: Path) -> None:
    runs = []
    for name in ("fedavg", "local"):
        config = load_config(classes_config(tmp_path / name, name, **(FEDERATED if name == "fedavg" else {})))
        folder = tmp_path / "exps" / name
        ExperimentRun(config, folder).execute()
        predict_run(config, folder)
        runs.append(read_run(folder))
    samples = list(csv.DictReader(open(tmp_path / "exps" / "fedavg" / "test_results" / "samples.csv")))
    assert {"p_nevus", "p_vascular", "label", "pred"} <= set(samples[0])
    summary = list(csv.DictReader(open(tmp_path / "exps" / "fedavg" / "test_results" / "summary.csv")))
    balanced = [row for row in summary if row["metric"] == "balanced_accuracy"]
    assert balanced and all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in balanced)
    comparisons = compare_runs(*runs, n_resamples=200)
    assert {c.metric for c in comparisons} == {"balanced_accuracy", "accuracy", "macro_f1", "auroc", "kappa"}
    for c in comparisons:
        if c.metric == "accuracy":
            assert c.bootstrap.estimate == pytest.approx(c.value_a - c.value_b)
