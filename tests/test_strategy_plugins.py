"""Two strategies written as plug-ins outside the package (tests/plugins/): FedAvgM (server
momentum) and SCAFFOLD (server and per-site control variates). Each is one file registered
through the ``siteflow.plugins`` entry point; both run simulated and on Flower, keep their
state across a kill, and a config gives the same global weights after every round both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import kill_once_written, tiny_config
from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import STRATEGIES, load_components
from siteflow.datasets.pooling import build_dataset
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, SiteStore

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO = Path(__file__).resolve().parent.parent
APP = REPO / "flower-app"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder that declares tests/plugins as an installed package's siteflow.plugins entry points."""
    folder = tmp_path_factory.mktemp("plugins")
    dist_info = folder / "siteflow_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: siteflow-test-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\nfedavgm = fedavgm\nscaffold = scaffold\n")
    return folder


@pytest.fixture
def plugins(plugin_path, monkeypatch):
    """The plug-ins registered in this process, and importable by the processes it starts."""
    for path in (PLUGINS, plugin_path):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    load_components()
    yield
    for name in ("fedavgm_plugin", "scaffold_plugin"):
        STRATEGIES._entries.pop(name, None)
    for module in ("fedavgm", "scaffold"):
        sys.modules.pop(module, None)


def simulate(folder: Path, strategy: str, **kwargs) -> ExperimentRun:
    folder.mkdir()
    config = load_config(tiny_config(folder, strategy, sites=2, common={"strategy": {"kwargs": kwargs}}))
    run = ExperimentRun(config, folder / "run")
    run.execute()
    return run


def global_weights(run: ExperimentRun) -> dict[str, torch.Tensor]:
    saved, _ = run.load_state(ROUND_STATE)
    return {k[len("global/"):]: v for k, v in saved.items() if k.startswith("global/")}


def test_each_plugin_is_one_small_file():
    for path in sorted(PLUGINS.glob("*.py")):
        lines = path.read_text().splitlines()
        assert len(lines) < 150, f"{path.name} has {len(lines)} lines"


def test_fedavgm_steps_with_momentum_by_hand(plugins):
    from siteflow.strategies.federated import SiteUpdate

    strategy = STRATEGIES.get("fedavgm_plugin")(momentum=0.9, server_lr=1.0)
    g0 = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    first = [SiteUpdate("a", {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}, 1),
             SiteUpdate("b", {"w": torch.tensor([2.0, 4.0]), "n": torch.tensor(2)}, 3)]
    g1 = strategy.aggregate(1, g0, first)  # average [1.5, 3.5]; v = g0 - average = [-0.5, -1.5]
    assert torch.allclose(g1["w"], torch.tensor([1.5, 3.5])) and g1["n"].item() == 2
    resumed = STRATEGIES.get("fedavgm_plugin")(momentum=0.9, server_lr=1.0)
    resumed.load_state_dict(strategy.state_dict())  # what a restarted server reads back
    second = [SiteUpdate("a", {"w": torch.tensor([2.5, 3.5]), "n": torch.tensor(1)}, 1),
              SiteUpdate("b", {"w": torch.tensor([1.5, 3.5]), "n": torch.tensor(2)}, 3)]
    g2 = resumed.aggregate(2, g1, second)  # average [1.75, 3.5]; v = 0.9 v + (g1 - average) = [-0.7, -1.35]
    assert torch.allclose(g2["w"], torch.tensor([2.2, 4.85]))
    assert torch.allclose(resumed.state_dict()["momentum/w"], torch.tensor([-0.7, -1.35]))


def test_fedavgm_runs_rounds_and_saves_its_momentum_with_them(tmp_path, plugins):
    fedavg = simulate(tmp_path / "fedavg", "fedavg", rounds=1)
    plain = simulate(tmp_path / "plain", "fedavgm_plugin", rounds=1, momentum=0.0, server_lr=1.0)
    expected, got = global_weights(fedavg), global_weights(plain)
    assert all(torch.allclose(got[k].double(), expected[k].double(), atol=1e-6) for k in expected)  # FedAvg's step

    heavy = simulate(tmp_path / "heavy", "fedavgm_plugin", rounds=2, momentum=0.9, server_lr=1.0)
    saved, info = heavy.load_state(ROUND_STATE)
    velocity = {k[len("strategy/momentum/"):]: v for k, v in saved.items() if k.startswith("strategy/momentum/")}
    assert info["round"] == 2 and velocity.keys() == {k for k, v in expected.items() if v.is_floating_point()}


def test_scaffold_keeps_the_site_variates_at_the_sites_and_resumes_after_a_kill(tmp_path, plugins):
    config = tiny_config(tmp_path, "scaffold_plugin", sites=2, common={"strategy": {"kwargs": {"rounds": 3}}})
    whole = ExperimentRun(load_config(config), tmp_path / "whole")
    whole.execute()
    saved, info = whole.load_state(ROUND_STATE)
    assert info["round"] == 3 and any(k.startswith("strategy/control/") for k in saved)
    for site in ("site1", "site2"):
        store = SiteStore(whole.site_folder(site))
        assert store.rounds("control") == [2, 3]  # what a re-run of round 3 or a round 4 would read
    c1 = SiteStore(whole.site_folder("site1")).load("control", before=4)
    c2 = SiteStore(whole.site_folder("site2")).load("control", before=4)
    server = {k[len("strategy/control/"):]: v for k, v in saved.items() if k.startswith("strategy/control/")}
    name = next(iter(server))
    assert not torch.equal(c1[name], c2[name])

    run_dir = tmp_path / "exps" / "scaffold_plugin" / "t"
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "exps")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state = run_dir / "checkpoints" / "global" / "round_state.safetensors"
    kill_once_written(command, state, cwd=tmp_path, env=env)
    resumed = ExperimentRun(load_config(config), run_dir)
    assert resumed.load_state(ROUND_STATE)[1]["round"] < 3, "the run finished before it could be interrupted"
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming the federation after round" in result.stderr
    final = load_weights(run_dir / "checkpoints" / "global" / "final.safetensors")
    expected = load_weights(whole.folder.checkpoints / "global" / "final.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected), "the resumed run lost SCAFFOLD's state"


@pytest.mark.slow
@pytest.mark.parametrize("strategy, kwargs", [("fedavgm_plugin", {"momentum": 0.5}), ("scaffold_plugin", {})])
def test_a_plugin_on_flower_gives_the_simulated_weights_after_every_round(tmp_path, plugins, strategy, kwargs):
    from flower_local import LocalFederation

    config = tiny_config(tmp_path, strategy, sites=2, common={"strategy": {"kwargs": {"rounds": 2, **kwargs}}})
    build_dataset(load_config(config).sites[0], "test")  # writes the synthetic sites, once
    simulated = ExperimentRun(load_config(config), tmp_path / "simulated")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sites' processes: the same arithmetic, bit for bit
    try:
        simulated.execute()
    finally:
        torch.set_num_threads(threads)
    nodes = [f'task-id={i} exps-root="{tmp_path / f"hospital{i}"}"' for i in (1, 2)]
    local = LocalFederation(tmp_path, nodes)
    try:
        run_config = f"config='{config}' note='t' exps-root='{tmp_path / 'server'}' wait-for-sites=120"
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=400)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    finally:
        local.close()
    deployed = ExperimentRun(load_config(config), tmp_path / "server" / strategy / "t")
    (_, deployed_info), (_, simulated_info) = deployed.load_state(ROUND_STATE), simulated.load_state(ROUND_STATE)
    assert deployed_info["round"] == 2
    assert deployed_info["digests"] == simulated_info["digests"], "the global weights differ after some round"
    assert deployed_info["strategy"] == simulated_info["strategy"]
    rows = json.loads((deployed.folder.results_dir / "progress.json").read_text())["stages"]
    assert [row["stage"] for row in rows] == ["round1", "round2"]
