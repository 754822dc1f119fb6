"""FedAvg deployed on Flower: a real SuperLink and two SuperNodes on 127.0.0.1.

The expected global weights are computed here: each site's round is reproduced in this
process with the same seeds (``FedAvgStrategy.local_update``), and averaged by hand.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from experiments import tiny_config
from flower_local import LocalFederation
from siteflow.config import load_config
from siteflow.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE

APP = Path(__file__).resolve().parent.parent / "flower-app"

pytestmark = pytest.mark.slow


@pytest.fixture
def federation(tmp_path):
    """Start a federation with ``federation(node_configs)``; every process is killed at the end."""
    started: list[LocalFederation] = []

    def start(node_configs: list[str]) -> LocalFederation:
        started.append(LocalFederation(tmp_path, node_configs))
        return started[-1]

    yield start
    for local in started:
        local.close()


def hospitals(tmp_path: Path, count: int = 2) -> list[str]:
    """Node configs: hospital i serves task i and keeps its files in its own folder."""
    return [f'task-id={i} exps-root="{tmp_path / f"hospital{i}"}"' for i in range(1, count + 1)]


def run_config(config: Path, server_root: Path) -> str:
    return f"config='{config}' note='t' exps-root='{server_root}' wait-for-sites=120"


def by_hand(config: Path, folder: Path, rounds: int) -> list[dict[str, torch.Tensor]]:
    """The global weights after each round, every site's update reproduced here and the
    average taken by hand: sum of samples * weights over the sum of samples."""
    sites = [ExperimentRun(load_config(config, task_ids=[i]), folder / f"site{i}") for i in (1, 2)]
    weights = sites[0].initial_state(sites[0].tasks[0]).weights
    history = []
    for round_number in range(1, rounds + 1):
        updates = [site.strategy.local_update(site, site.tasks[0], weights, round_number) for site in sites]
        total = sum(update.num_samples for update in updates)
        weights = {
            name: sum(update.num_samples * update.weights[name] for update in updates) / total
            if tensor.is_floating_point() else updates[0].weights[name]  # BatchNorm's batch counters: equal here
            for name, tensor in weights.items()
        }
        history.append(weights)
    return history


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(actual[name].to(expected[name].dtype), expected[name], rtol=1e-5, atol=1e-6), name


def matrix(results: Path) -> list[dict[str, str]]:
    with open(results / "site_matrix_dice.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_rounds_on_flower_average_the_sites_and_a_killed_server_resumes(tmp_path, federation):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 2}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")  # also writes the data, once
    local = federation(hospitals(tmp_path))
    local.submit(APP, run_config(config, tmp_path / "server"))
    expected = by_hand(config, tmp_path / "by_hand", rounds=2)

    deadline = time.monotonic() + 240
    while server.load_state(ROUND_STATE) is None:  # written atomically after round 1
        assert time.monotonic() < deadline, f"round 1 did not finish\n{local.log_tails()}"
        time.sleep(0.1)
    local.kill_server_app()
    saved, info = server.load_state(ROUND_STATE)
    assert info == {"round": 1}
    assert_close({k[len("global/"):]: v for k, v in saved.items()}, expected[0])

    result = local.flwr("run", str(APP), "test", "--run-config", run_config(config, tmp_path / "server"), "--stream", timeout=300)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    assert "resuming the federation after round 1" in result.stdout
    saved, info = server.load_state(ROUND_STATE)
    assert info == {"round": 2}
    assert_close(server.load_state("global/final")[0], expected[1])

    rows = matrix(server.results_dir)
    assert [row["after_stage"] for row in rows] == ["round1", "round2"]
    assert all(0.0 <= float(row[site]) <= 1.0 for row in rows for site in ("site1", "site2"))
    summary = json.loads((server.results_dir / "summary.json").read_text())
    assert summary["stages"] == ["round1", "round2"] and summary["sites"] == ["site1", "site2"]
    assert summary["dice"]["final_per_site"]["site1"] == pytest.approx(float(rows[1]["site1"]), abs=1e-6)
    progress = json.loads((server.results_dir / "progress.json").read_text())["stages"]
    assert progress[-1]["weights"] == "checkpoints/global/final.safetensors"  # what predict_test.py evaluates
    for site in (1, 2):  # each hospital kept its own logs, none of the server's files
        site_dir = tmp_path / f"hospital{site}" / "fedavg" / "t" / f"site{site}"
        assert (site_dir / "logs" / "round2" / f"site{site}").is_dir()
        assert not (site_dir / "checkpoints" / "global").exists()


def test_a_failing_site_is_logged_by_name_and_the_round_goes_on(tmp_path, federation):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 1, "min_sites": 1}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")
    shutil.rmtree(next((tmp_path / "data").glob("*/Domain2/train/image")))  # site 2 cannot train; it can test
    local = federation(hospitals(tmp_path))
    result = local.flwr("run", str(APP), "test", "--run-config", run_config(config, tmp_path / "server"), "--stream", timeout=300)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    assert "round 1: site site2 failed (training)" in result.stdout
    (log_file,) = (server.logs_dir).glob("flower_server*.log")
    assert "round 1: site site2 failed (training)" in log_file.read_text()
    assert "round 1: averaged site1 (4 samples)" in result.stdout

    (row,) = matrix(server.results_dir)
    assert row["after_stage"] == "round1"
    assert not math.isnan(float(row["site1"])) and not math.isnan(float(row["site2"]))  # both tested the global model
