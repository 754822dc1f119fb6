"""Fault injection (seeded): a deployed FedAvg of three sites, one of them poisoned, with robust
aggregation; the ServerApp is killed at a random moment after a random round, one site's
SuperNode is killed and comes back while the server is down, and the run is started again.
The federation finishes, the poisoned site is left out of every round by name, and the final
weights are those of the same study simulated without any fault (the design promises it: a
restarted server resumes after its last saved round, a restarted site rejoins under a new node
id, and every site's round is seeded by the study's seed and the round)."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import tiny_config
from flower_local import APP, LocalFederation
from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import STRATEGIES, load_components
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE

TESTS = Path(__file__).resolve().parent
SEED = 0
ROUNDS = 3
OPTIONS = {"rounds": ROUNDS, "min_sites": 2, "poisoned_site": "site3", "robust": {"name": "krum", "byzantine": 1, "select": 2}}


@pytest.fixture
def poisoned_plugin(tmp_path, monkeypatch):
    """``poisoned_fedavg`` (tests/plugins/poisoned.py) registered here and in every process started."""
    dist_info = tmp_path / "entry" / "siteflow_test_poisoning-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: siteflow-test-poisoning\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\npoisoned = poisoned\n")
    paths = [str(TESTS), str(TESTS / "plugins"), str(dist_info.parent)]
    for path in paths:
        monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
    load_components()
    yield
    STRATEGIES.unregister("poisoned_fedavg")
    sys.modules.pop("poisoned", None)


@pytest.mark.slow
def test_killed_server_and_site_then_a_rerun_finish_with_the_fault_free_weights(tmp_path, poisoned_plugin):
    rng = random.Random(SEED)
    config = tiny_config(tmp_path, "poisoned_fedavg", sites=3, common={"strategy": {"kwargs": OPTIONS}})
    loaded = load_config(config)
    build_dataset(loaded.sites[0], "test")  # writes the synthetic sites, once
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the sites' processes run on one thread: the same arithmetic, bit for bit
    try:
        reference = ExperimentRun(loaded, tmp_path / "fault_free")
        reference.execute()
    finally:
        torch.set_num_threads(threads)

    server = ExperimentRun(loaded, tmp_path / "server" / "poisoned_fedavg" / "t")
    nodes = [f'task-id={i} exps-root="{tmp_path / f"hospital{i}"}"' for i in (1, 2, 3)]
    local = LocalFederation(tmp_path, nodes)
    run_config = f"config='{config}' note='t' exps-root='{tmp_path / 'server'}' wait-for-sites=120 round-timeout=300"
    try:
        local.submit(APP, run_config)
        killed_after = rng.randint(1, ROUNDS - 1)
        deadline = time.monotonic() + 400
        while (saved := server.load_state(ROUND_STATE)) is None or saved[1]["round"] < killed_after:
            assert time.monotonic() < deadline, f"round {killed_after} did not finish\n{local.log_tails()}"
            time.sleep(0.1)
        time.sleep(rng.uniform(0.5, 2.0))
        local.kill_server_app()
        site = rng.choice(["supernode1", "supernode2", "supernode3"])
        local.restart(site)  # a hospital's machine crashes and comes back while the server is down
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=500)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    finally:
        local.close()

    finished = ExperimentRun(loaded, server.folder.path)
    _, info = finished.load_state(ROUND_STATE)
    assert info["round"] == ROUNDS
    logs = "".join(path.read_text() for path in sorted(finished.folder.logs.glob("flower_server_*.log")))
    for round_number in range(1, ROUNDS + 1):
        assert f"round {round_number}: krum left out site3 (kept site1, site2)" in logs, f"round {round_number}\n{logs[-3000:]}"
    assert "resuming the federation after round" in logs
    expected = load_weights(reference.folder.checkpoints / "global" / "final.safetensors")
    actual = load_weights(finished.folder.checkpoints / "global" / "final.safetensors")
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected), "the faults changed the final weights"
    _, reference_info = reference.load_state(ROUND_STATE)
    assert info["digests"] == reference_info["digests"]
