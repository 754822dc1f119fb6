"""FFL across sites whose label sets differ: the trunk is averaged, each head stays at its site."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments import RecordsUpdates, sample_weighted_mean, tiny_config
from siteflow.core.atomic import load_weights
from siteflow.tasks.multilabel import MultiLabelTask, UnionLabels, positive_weights
from siteflow.config import load_config
from siteflow.datasets.pooling import build_dataset
from siteflow.losses import MaskedBCEWithLogitsLoss
from siteflow.metrics import masked_auroc, sensitivity_specificity, youden_thresholds
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, FFLStrategy, SiteStore

CXR = {
    "name": "synthetic_cxr",
    "kwargs": {"train_per_site": 12, "test_per_site": 6, "native_size": [48, 56], "img_size": [32, 32], "val_fraction": 0.25},
}
SITES = [{"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"site{i}"}} for i in (1, 2, 3)]


def cxr_config(folder: Path, strategy: str, **strategy_kwargs) -> Path:
    dataset = {"name": CXR["name"], "kwargs": {**CXR["kwargs"], "root_path": str(folder / "data")}}
    return tiny_config(
        folder, strategy, sites=3, dataset=dataset, model={"name": "resnet_classifier", "kwargs": {"depth": 18}},
        all_tasks_datasets=SITES,
        common={
            "strategy": {"kwargs": strategy_kwargs},
            "train": {"loss": {"name": "bce", "kwargs": {"pos_weight": "auto"}}, "batch_size": 8},
        },
    )


class RecordingFFL(RecordsUpdates, FFLStrategy):
    """FFL that keeps every site's update (what the server averaged)."""


@pytest.fixture(scope="module")
def ffl_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ffl")
    config = load_config(cxr_config(folder, "ffl", rounds=1, weighting="samples"))
    runner = ExperimentRun(config, folder / "run", strategy=RecordingFFL(**config.strategy.kwargs))
    runner.summary = runner.execute()
    return runner


def test_the_label_space_is_the_union_of_the_sites_labels(ffl_run):
    assert isinstance(ffl_run.task, MultiLabelTask)
    assert ffl_run.task.class_names == ("cardiomegaly", "pleural_effusion", "pneumonia", "edema", "pneumothorax")
    site2 = UnionLabels(build_dataset(ffl_run.config.sites[1], "train"), ffl_run.task.class_names)
    item = site2[0]
    assert item["mask"].tolist() == [0, 0, 1, 1, 0]  # site 2 annotates pneumonia and edema only
    assert item["labels"][[0, 1, 4]].tolist() == [0, 0, 0]


def test_after_a_round_the_trunk_is_the_weighted_mean_and_each_head_its_sites(ffl_run):
    updates = ffl_run.strategy.updates
    assert [u.site for u in updates] == ["site1", "site2", "site3"]
    saved, _ = ffl_run.load_state(ROUND_STATE)
    trunk = [k for k in updates[0].weights if k.startswith("trunk.") and updates[0].weights[k].is_floating_point()]
    assert any("running_mean" in k for k in trunk), "normalisation buffers must be aggregated with the trunk"
    for name in trunk:
        assert torch.allclose(saved[f"global/{name}"].double(), sample_weighted_mean(updates, name), atol=1e-6), name
    conv = "trunk.stem.0.weight" if "trunk.stem.0.weight" in saved else next(k for k in trunk if k.endswith("weight"))
    assert all(not torch.equal(saved[f"global/{conv}"], u.weights[conv]) for u in updates)
    heads = {u.site: SiteStore(ffl_run.site_folder(u.site)).load("local", before=2) for u in updates}
    for update in updates:
        assert not any(name.startswith("head.") for name in update.weights), "a head left its site"
        assert set(heads[update.site]) == {"head.weight", "head.bias"}
        assert not torch.equal(heads[update.site]["head.weight"], saved["global/head.weight"]), "the head did not train"
    assert not torch.equal(heads["site1"]["head.weight"], heads["site2"]["head.weight"])


def test_each_site_is_tested_on_its_own_labels_with_its_own_head(ffl_run):
    row = ffl_run.results[-1].values
    assert set(row) == {"site1", "site2", "site3"}
    assert set(row["site2"]) == {"auroc", "auroc_pneumonia", "auroc_edema"}
    assert set(row["site3"]) == {"auroc", "auroc_cardiomegaly", "auroc_pneumonia", "auroc_pneumothorax"}
    assert ffl_run.summary["metrics"] == ["auroc"]
    ((stage, _, own),) = ffl_run.folder.stage_weights()
    assert stage == "round1" and set(own) == {"site1", "site2", "site3"}
    kept = SiteStore(ffl_run.site_folder("site2")).load("local", before=2)
    assert torch.equal(load_weights(own["site2"])["head.weight"], kept["head.weight"])


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss = MaskedBCEWithLogitsLoss(pos_weight=[2.0, 1.0])(logits, targets, mask)
    by_hand = (2 * torch.nn.functional.softplus(torch.tensor(-2.0)) + torch.nn.functional.softplus(torch.tensor(0.5))
               + torch.nn.functional.softplus(torch.tensor(-3.0))) / 3
    assert loss.item() == pytest.approx(by_hand.item())


def test_auroc_and_youden_threshold_by_hand():
    scores = torch.tensor([[0.1], [0.4], [0.35], [0.8], [0.9]])
    targets = torch.tensor([[0.0], [0.0], [1.0], [1.0], [1.0]])
    # pairs (positive, negative) ranked right: 0.35>0.1, 0.8>both, 0.9>both; 0.35<0.4 wrong: 5/6
    assert masked_auroc(scores, targets).item() == pytest.approx(5 / 6)
    mask = torch.tensor([[1.0], [0.0], [1.0], [1.0], [1.0]])  # the 0.4 negative unknown: perfect
    assert masked_auroc(scores, targets, mask).item() == pytest.approx(1.0)
    threshold = youden_thresholds(scores, targets)
    assert threshold.item() == pytest.approx(0.8)  # sensitivity 2/3 + specificity 1 beats 1 + 1/2
    sensitivity, specificity = sensitivity_specificity(scores, targets, None, threshold)
    assert (sensitivity.item(), specificity.item()) == (pytest.approx(2 / 3), 1.0)
    assert torch.isnan(masked_auroc(scores, torch.ones_like(targets))).all()


def test_pos_weight_from_the_sites_known_training_labels(ffl_run):
    site1 = UnionLabels(build_dataset(ffl_run.config.sites[0], "train"), ffl_run.task.class_names)
    positives, known = site1.dataset.positive_counts()
    weights = positive_weights([site1])
    expected = [(k - p) / p if p else 1.0 for p, k in zip(positives.tolist(), known.tolist())]
    assert weights[:2] == pytest.approx(expected)
    assert weights[2:] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_predict_writes_auroc_with_intervals_and_validation_thresholds(ffl_run):
    import csv

    from siteflow.engine.predict import predict_run

    output = predict_run(ffl_run.config, ffl_run.folder.path)
    with open(output / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    site2 = [r for r in rows if r["site"] == "site2"]
    assert [r["label"] for r in site2] == ["pneumonia", "edema", "mean"]
    matrix_value = ffl_run.results[-1].values["site2"]["auroc"]
    assert float(site2[-1]["auroc"]) == pytest.approx(matrix_value, abs=1e-6)  # the site's own head, both ways
    for row in rows:
        if row["auroc_ci_low"]:
            assert float(row["auroc_ci_low"]) <= float(row["auroc"]) <= float(row["auroc_ci_high"])
    assert all(0.0 <= float(r["sensitivity"]) <= 1.0 for r in site2[:-1])
    with open(output / "samples.csv") as handle:
        samples = [r for r in csv.DictReader(handle) if r["site"] == "site2"]
    assert samples and all(r["p_cardiomegaly"] == "" and r["y_cardiomegaly"] == "" and r["p_edema"] != "" for r in samples)


def test_deployed_on_flower_only_the_trunk_leaves_a_site(tmp_path):
    from siteflow.deploy.flower.protocol import NodeSettings, RunSettings
    from siteflow.deploy.flower.site import DeployedSite

    config = cxr_config(tmp_path, "ffl", rounds=1)
    site = DeployedSite(RunSettings(config=str(config), note="t"), NodeSettings(task_id=2, exps_root=tmp_path / "hospital2"))
    global_weights = site.run.start(site.site.site_run, lambda: site.strategy.build_network(site.run.task)).weights
    update = site.train(global_weights, 1)  # a real round of local training at site 2
    assert update.weights and not any(name.startswith("head.") for name in update.weights)
    assert set(update.weights) == {name for name in global_weights if not name.startswith("head.")}
    kept = load_weights(site.run.site_folder("site2") / "local" / "round1.safetensors")
    assert set(kept) == {"head.weight", "head.bias"}
    assert not torch.equal(kept["head.weight"], global_weights["head.weight"]), "the head did not train"


def test_deployed_each_hospital_fine_tunes_and_tests_its_own_model(tmp_path):
    from siteflow.deploy.flower.protocol import NodeSettings, RunSettings
    from siteflow.deploy.flower.site import DeployedSite

    config = cxr_config(tmp_path, "ffl", rounds=1, fine_tune_epochs=1)
    settings, node = RunSettings(config=str(config), note="t"), NodeSettings(task_id=2, exps_root=tmp_path / "hospital2")
    site = DeployedSite(settings, node)
    assert site.strategy.finishes
    global_weights = site.run.start(site.site.site_run, lambda: site.strategy.build_network(site.run.task)).weights
    site.train(global_weights, 1)  # round 1: the head trains and stays here
    values = DeployedSite(settings, node).finish(global_weights)  # a new process, as every Flower message
    assert set(values) == {"auroc", "auroc_pneumonia", "auroc_edema"}  # site 2's own labels only
    tuned = load_weights(site.run.folder.checkpoints / "finetune" / "task_2" / "final.safetensors")
    kept = SiteStore(site.run.site_folder("site2")).load("local", before=2)
    assert not torch.equal(tuned["head.weight"], kept["head.weight"]), "fine-tuning did not train the head"
    assert any(not torch.equal(tuned[k], global_weights[k]) for k in tuned if k.startswith("trunk.") and tuned[k].is_floating_point())
    own = load_weights(site.run.folder.checkpoints / "finetuned" / "final_site2.safetensors")
    assert all(torch.equal(own[k], tuned[k]) for k in tuned), "the site keeps the model it was tested with"


@pytest.mark.slow
def test_a_simulated_fine_tuned_row_names_each_sites_fine_tuned_weights(tmp_path):
    config = load_config(cxr_config(tmp_path, "ffl", rounds=1, fine_tune_epochs=1))
    runner = ExperimentRun(config, tmp_path / "run")
    runner.execute()
    stages = {stage: (final, own) for stage, final, own in runner.folder.stage_weights()}
    assert list(stages) == ["round1", "finetuned"]
    final, own = stages["finetuned"]
    assert set(own) == {"site1", "site2", "site3"}
    for site in own:
        tuned = load_weights(runner.folder.checkpoints / "finetune" / f"task_{site[-1]}" / "final.safetensors")
        kept = load_weights(own[site])
        assert all(torch.equal(kept[k], tuned[k]) for k in tuned)
