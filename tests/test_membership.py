"""Membership: a deployed federation with SuperNode authentication admits only the sites whose
public keys the consortium registered; an unlisted node is refused by the SuperLink and the
federation goes on without it. Real SuperLink and SuperNodes on 127.0.0.1, with TLS."""

from __future__ import annotations

import time

import pytest

from experiments import tiny_config
from flower_local import APP, LocalFederation, make_credentials
from siteflow.config import load_config
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun


@pytest.mark.slow
def test_an_unlisted_supernode_is_refused_and_the_federation_goes_on_without_it(tmp_path):
    options = {"rounds": 1, "min_sites": 2}
    config = tiny_config(tmp_path, "fedavg", sites=3, common={"strategy": {"kwargs": options}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")
    build_dataset(server.config.sites[0], "test")  # writes the synthetic sites, once
    credentials = make_credentials(tmp_path / "credentials", ["site1", "site2", "intruder"])
    nodes = [f'task-id={i} exps-root="{tmp_path / f"hospital{i}"}"' for i in (1, 2, 3)]
    local = LocalFederation(tmp_path, nodes, credentials=credentials, node_keys=["site1", "site2", "intruder"], members=["site1", "site2"])
    try:
        deadline = time.monotonic() + 120
        while local.processes["supernode3"].poll() is None:  # the SuperLink refuses its key: it gives up
            assert time.monotonic() < deadline, f"the unlisted SuperNode was not refused\n{local.log_tails()}"
            time.sleep(0.5)
        refused = (local.logs / "supernode3.log").read_text(errors="replace")
        assert local.processes["supernode3"].returncode != 0 and "Failed to activate SuperNode" in refused

        run_config = f"config='{config}' note='t' exps-root='{tmp_path / 'server'}' wait-for-sites=20"
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=400)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
        assert "starting without site3" in result.stdout
    finally:
        local.close()
    server = ExperimentRun(load_config(config), server.folder.path)  # what the ServerApp wrote
    _, info = server.load_state("global/round_state")
    assert info["round"] == 1
    assert sorted(server.folder.results[-1].values) == ["site1", "site2"]  # the federation went on with its members
    assert not (tmp_path / "hospital3").exists()  # the intruder never got a message
