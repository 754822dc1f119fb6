"""local, joint and sequential, end to end on tiny synthetic sites with real Lightning runs."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import tiny_config
from siteflow.core.atomic import load_weights
from siteflow.handover import HandoverError
from siteflow.config import ConfigError, load_config
from siteflow.datasets.pooling import build_dataset, pooled_dataset
from siteflow.engine.run_folder import RunFolderConflict
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies import SiteInput


class RecordingRun(ExperimentRun):
    """The real runner, remembering what each stage started from and trained on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started_from: dict[str, dict[str, torch.Tensor]] = {}
        self.trained_on: dict[str, list[str]] = {}
        self.handed: dict[str, SiteInput] = {}

    def fit(self, stage, site_runs, start, trainee, **kwargs):
        self.started_from[stage] = start
        self.trained_on[stage] = [t.task_name for t in site_runs]
        return super().fit(stage, site_runs, start, trainee, **kwargs)

    def hand_over(self, carried, *, save_dir):
        self.handed[save_dir] = carried
        return super().hand_over(carried, save_dir=save_dir)

    def received(self, task):
        """What ``task`` starts from, as the sequential strategy asks for it."""
        return self.start(task, lambda: self.strategy.build_network(self.task), site_order=self.strategy.relay_order(self))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run(tmp_path, strategy: str, **overrides) -> RecordingRun:
    config = load_config(tiny_config(tmp_path, strategy, **overrides))
    runner = RecordingRun(config, tmp_path / "run")
    runner.summary = runner.execute()
    return runner


@pytest.mark.slow
def test_local_every_site_starts_from_the_same_initial_weights(tmp_path):
    runner = run(tmp_path, "local")
    initial = load_weights(tmp_path / "run" / "checkpoints" / "initial.safetensors")
    assert same(runner.started_from["site1"], initial)
    assert same(runner.started_from["site2"], initial)
    first_final = load_weights(tmp_path / "run" / "checkpoints" / "task_1" / "final.safetensors")
    assert not same(first_final, initial), "site 1 did not train"
    assert runner.trained_on == {"site1": ["site1"], "site2": ["site2"]}
    summary = runner.summary["dice"]
    rows = json.loads((tmp_path / "run" / "results" / "progress.json").read_text())["stages"]
    assert summary["final_per_site"] == {
        "site1": pytest.approx(rows[0]["values"]["site1"]["dice"]),
        "site2": pytest.approx(rows[1]["values"]["site2"]["dice"]),
    }
    assert summary["backward_transfer"] is None


def test_sequential_site_k_starts_from_site_k_minus_1(tmp_path):
    runner = run(tmp_path, "sequential")
    first_final = load_weights(tmp_path / "run" / "checkpoints" / "task_1" / "final.safetensors")
    assert same(runner.started_from["site2"], first_final)
    assert same(runner.handed["task_1"].weights, first_final)  # what site 2 received, with the chain so far
    assert [site.task_name for site in runner.handed["task_1"].sites] == ["site1"]
    initial = load_weights(tmp_path / "run" / "checkpoints" / "initial.safetensors")
    assert same(runner.started_from["site1"], initial)
    matrix = (tmp_path / "run" / "results" / "site_matrix_dice.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in matrix] == ["after_stage", "site1", "site2"]
    values = [[float(v) for v in line.split(",")[2:4]] for line in matrix[1:]]
    expected = ((values[1][0] - values[0][0]))  # only site 1 is earlier than the last site
    assert runner.summary["dice"]["backward_transfer"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_sequential_cycles_repeat_the_order(tmp_path):
    runner = run(tmp_path, "sequential", common={"strategy": {"kwargs": {"cycles": 2}}})
    assert list(runner.started_from) == ["cycle1/site1", "cycle1/site2", "cycle2/site1", "cycle2/site2"]
    previous = load_weights(tmp_path / "run" / "checkpoints" / "cycle1" / "task_2" / "final.safetensors")
    assert same(runner.started_from["cycle2/site1"], previous)
    assert runner.summary["stages"] == ["cycle1/site1", "cycle1/site2", "cycle2/site1", "cycle2/site2"]


@pytest.mark.slow
def test_joint_trains_once_on_the_sum_of_the_sites(tmp_path):
    runner = run(tmp_path, "joint", sites=3)
    assert runner.trained_on == {"joint": ["site1", "site2", "site3"]}
    config = runner.config
    pooled = pooled_dataset([t.site for t in config.site_runs], "train")
    assert len(pooled) == sum(len(build_dataset(t.site, "train")) for t in config.site_runs) == 3 * 4
    assert runner.summary["stages"] == ["joint"]
    assert runner.summary["dice"]["backward_transfer"] is None
    assert set(runner.summary["dice"]["final_per_site"]) == {"site1", "site2", "site3"}


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(tmp_path):
    run(tmp_path, "sequential")
    weights = tmp_path / "run" / "checkpoints" / "task_2" / "final.safetensors"
    before = weights.read_bytes(), weights.stat().st_mtime_ns
    again = run(tmp_path, "sequential")
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == before
    assert again.summary["stages"] == ["site1", "site2"]


def test_a_run_folder_is_not_resumed_with_a_different_config(tmp_path):
    run(tmp_path, "sequential")
    changed = load_config(tiny_config(tmp_path, "sequential", common={"train": {"epochs": 2}}))
    with pytest.raises(RunFolderConflict, match=r"different config \(changed: tasks\[0\]\.train\.epochs, tasks\[1\]\.train\.epochs\)"):
        ExperimentRun(changed, tmp_path / "run").execute()


@pytest.mark.slow
def test_a_site_starts_from_its_load_file_and_a_foreign_architecture_is_refused(tmp_path):
    run(tmp_path, "sequential")
    handed = tmp_path / "run" / "checkpoints" / "task_1" / "handover.safetensors"
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    config = load_config(
        tiny_config(deployed, "sequential", current_tasks={"task_ids": [2], "task_confs": {2: {"checkpoint": {"load": str(handed)}}}})
    )
    runner = RecordingRun(config, deployed / "run")
    received = runner.received(config.site_runs[0])
    assert same(received.weights, load_weights(tmp_path / "run" / "checkpoints" / "task_1" / "final.safetensors"))
    assert [site.task_name for site in received.sites] == ["site1"]

    late = tmp_path / "run" / "checkpoints" / "task_2" / "handover.safetensors"
    config = load_config(
        tiny_config(deployed, "sequential", current_tasks={"task_ids": [2], "task_confs": {2: {"checkpoint": {"load": str(late)}}}})
    )
    with pytest.raises(HandoverError, match="site out of order"):
        RecordingRun(config, deployed / "run2").received(config.site_runs[0])

    wider = tmp_path / "wider"
    wider.mkdir()
    config = load_config(
        tiny_config(
            wider,
            "sequential",
            common={"model": {"kwargs": {"base_channels": 8}}},
            current_tasks={"task_ids": [2], "task_confs": {2: {"checkpoint": {"load": str(handed)}}}},
        )
    )
    with pytest.raises(HandoverError, match=r"model"):
        RecordingRun(config, wider / "run").received(config.site_runs[0])


def test_vessel_sites_in_three_layouts_skip_pixels_outside_the_field_of_view(tmp_path):
    vessels = {
        "name": "synthetic_vessels",
        "kwargs": {
            "root_path": str(tmp_path / "data"),
            "train_per_site": 4,
            "test_per_site": 2,
            "native_size": [40, 48],
            "img_size": [32, 32],
            "val_fraction": 0.25,
            "fov_ignore_index": 255,
        },
    }
    sites = [{"task_id": i, "task_name": name, "kwargs": {"folder": name}} for i, name in enumerate(["DRIVE", "STARE", "CHASE_DB1"], 1)]
    path = tiny_config(
        tmp_path, "local", sites=3, dataset=vessels, all_tasks_datasets=sites,
        common={"train": {"loss": {"name": "dice_ce", "kwargs": {"ignore_index": 255}}}},
    )
    runner = RecordingRun(load_config(path), tmp_path / "run")
    assert runner.task.ignore_index == 255 and runner.task.class_names == ("background", "vessel")
    summary = runner.execute()["dice"]
    assert set(summary["final_per_site"]) == {"DRIVE", "STARE", "CHASE_DB1"}
    assert all(0.0 <= v <= 1.0 for v in summary["final_per_site"].values())

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="set common.train.loss.kwargs.ignore_index: 255"):
        load_config(tiny_config(other, "local", sites=3, dataset=vessels, all_tasks_datasets=sites))


@pytest.mark.slow
def test_a_deployed_sequential_chain_ends_with_the_simulated_weights(tmp_path):
    simulated = run(tmp_path, "sequential", sites=3)
    received = None
    for task_id in (1, 2, 3):
        hospital = tmp_path / f"hospital{task_id}"
        hospital.mkdir()
        confs = {task_id: {"checkpoint": {"load": str(received)}}} if received else {}
        config = load_config(tiny_config(hospital, "sequential", sites=3, current_tasks={"task_ids": [task_id], "task_confs": confs}))
        ExperimentRun(config, hospital / "run").execute()
        received = hospital / "run" / "checkpoints" / f"task_{task_id}" / "handover.safetensors"
    expected = load_weights(simulated.folder.checkpoints / "task_3" / "final.safetensors")
    deployed = load_weights(received)
    assert deployed.keys() == expected.keys()
    assert all(torch.allclose(deployed[k], expected[k], rtol=1e-5, atol=1e-6) for k in expected)
