"""Two strategies written as plug-ins outside the package (tests/plugins/): FedAMSGrad (a
server optimiser on siteflow's shared base: server state) and FedDyn (server state and
per-site state). Each is one file registered through the ``siteflow.plugins`` entry point;
both run simulated and on Flower, keep their state across a kill, and a config gives the same
global weights after every round both ways."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments import kill_once_written, tiny_config
from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import STRATEGIES, load_components
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, SiteStore, SiteUpdate

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder that declares tests/plugins as an installed package's siteflow.plugins entry points."""
    folder = tmp_path_factory.mktemp("plugins")
    dist_info = folder / "siteflow_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: siteflow-test-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\nfedamsgrad = fedamsgrad\nfeddyn = feddyn\n")
    return folder


@pytest.fixture
def plugins(plugin_path, monkeypatch):
    """The plug-ins registered in this process, and importable by the processes it starts."""
    for path in (PLUGINS, plugin_path):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    load_components()
    yield
    for name in ("fedamsgrad_plugin", "feddyn_plugin"):
        STRATEGIES.unregister(name)
    for module in ("fedamsgrad", "feddyn"):
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


def test_fedamsgrad_steps_with_the_running_maximum_by_hand(plugins):
    strategy = STRATEGIES.get("fedamsgrad_plugin")(server_lr=0.1, beta1=0.5, beta2=0.5, tau=0.1, initial_v=0.0, weighting="equal")
    strategy.prepare_server(nn.Linear(2, 1, bias=False), ["a", "b"])
    x0 = {"weight": torch.tensor([[1.0, 2.0]])}
    first = [SiteUpdate("a", {"weight": torch.tensor([[3.0, 2.0]])}, 1), SiteUpdate("b", {"weight": torch.tensor([[3.0, 6.0]])}, 1)]
    x1 = strategy.aggregate(1, x0, first)  # delta = [2, 2]: m = 1, v = 2, v_max = 2
    step1 = 0.1 * 1 / (math.sqrt(2) + 0.1)
    assert torch.allclose(x1["weight"], torch.tensor([[1 + step1, 2 + step1]]))
    resumed = STRATEGIES.get("fedamsgrad_plugin")(server_lr=0.1, beta1=0.5, beta2=0.5, tau=0.1, initial_v=0.0, weighting="equal")
    resumed.prepare_server(nn.Linear(2, 1, bias=False), ["a", "b"])
    resumed.load_state_dict(strategy.state_dict())  # what a restarted server reads back
    x2 = resumed.aggregate(2, x1, [SiteUpdate("a", x1, 1), SiteUpdate("b", x1, 1)])  # delta = 0: m = 0.5, v = 1, v_max stays 2
    step2 = 0.1 * 0.5 / (math.sqrt(2) + 0.1)  # FedAdam would divide by sqrt(1) + 0.1
    assert torch.allclose(x2["weight"], x1["weight"] + step2)
    state = resumed.state_dict()
    assert set(state) == {"m/weight", "v/weight", "v_max/weight"}
    assert torch.allclose(state["v/weight"], torch.tensor([[1.0, 1.0]])) and torch.allclose(state["v_max/weight"], torch.tensor([[2.0, 2.0]]))


def test_fedamsgrad_runs_rounds_and_saves_its_buffers_with_them(tmp_path, plugins):
    run = simulate(tmp_path / "amsgrad", "fedamsgrad_plugin", rounds=2)
    saved, info = run.load_state(ROUND_STATE)
    parameters = {name for name, _ in run.strategy.build_network(run.task).named_parameters()}
    for buffer in ("m", "v", "v_max"):
        assert {k[len(f"strategy/{buffer}/"):] for k in saved if k.startswith(f"strategy/{buffer}/")} == parameters
    assert info["round"] == 2


def test_feddyn_corrects_the_average_by_hand(plugins):
    strategy = STRATEGIES.get("feddyn_plugin")(alpha=0.5, weighting="equal")
    strategy.prepare_server(nn.Linear(2, 1, bias=False), ["a", "b", "c"])  # N = 3, two of them reply
    x = {"weight": torch.tensor([[1.0, 2.0]])}
    updates = [SiteUpdate("a", {"weight": torch.tensor([[2.0, 2.0]])}, 1), SiteUpdate("b", {"weight": torch.tensor([[0.0, 4.0]])}, 1)]
    new = strategy.aggregate(1, x, updates)  # h = -0.5 / 3 * ([1, 0] + [-1, 2]) = [0, -1/3]; average [1, 3] - h / 0.5
    assert torch.allclose(strategy.state_dict()["h/weight"], torch.tensor([[0.0, -1 / 3]]))
    assert torch.allclose(new["weight"], torch.tensor([[1.0, 3 + 2 / 3]]))


@pytest.mark.slow
def test_feddyn_keeps_the_site_state_at_the_sites_and_resumes_after_a_kill(tmp_path, plugins):
    config = tiny_config(tmp_path, "feddyn_plugin", sites=2, common={"strategy": {"kwargs": {"rounds": 3}}})
    whole = ExperimentRun(load_config(config), tmp_path / "whole")
    whole.execute()
    saved, info = whole.load_state(ROUND_STATE)
    assert info["round"] == 3 and any(k.startswith("strategy/h/") for k in saved)
    for site in ("site1", "site2"):
        assert SiteStore(whole.site_folder(site)).rounds("feddyn") == [2, 3]  # what a re-run of round 3 or a round 4 would read
    g1 = SiteStore(whole.site_folder("site1")).load("feddyn", before=4)
    g2 = SiteStore(whole.site_folder("site2")).load("feddyn", before=4)
    name = next(k[len("strategy/h/"):] for k in saved if k.startswith("strategy/h/"))
    assert not torch.equal(g1[name], g2[name])

    run_dir = tmp_path / "exps" / "feddyn_plugin" / "t"
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
    assert all(torch.equal(final[k], expected[k]) for k in expected), "the resumed run lost FedDyn's state"


@pytest.mark.slow
@pytest.mark.parametrize("strategy, kwargs", [("fedamsgrad_plugin", {"server_lr": 0.05}), ("feddyn_plugin", {"alpha": 0.05})])
def test_a_plugin_on_flower_gives_the_simulated_weights_after_every_round(tmp_path, plugins, strategy, kwargs):
    from flower_local import simulated_and_deployed

    config = tiny_config(tmp_path, strategy, sites=2, common={"strategy": {"kwargs": {"rounds": 2, **kwargs}}})
    simulated, deployed = simulated_and_deployed(tmp_path, config)
    (_, deployed_info), (_, simulated_info) = deployed.load_state(ROUND_STATE), simulated.load_state(ROUND_STATE)
    assert deployed_info["round"] == 2
    assert deployed_info["digests"] == simulated_info["digests"], "the global weights differ after some round"
    assert deployed_info["strategy"] == simulated_info["strategy"]
    rows = json.loads((deployed.folder.results_dir / "progress.json").read_text())["stages"]
    assert [row["stage"] for row in rows] == ["round1", "round2"]


def test_a_strategy_declares_how_often_a_site_trains_and_dp_sgd_spends_its_budget_over_it(tmp_path):
    from siteflow.config import load_config
    from siteflow.core.registry import STRATEGIES
    from siteflow.strategies.sequential import SequentialStrategy

    class Passes(SequentialStrategy):
        """Sequential fine-tuning whose counter has its own name.

        Args:
            passes: how many times the order is walked.
        """

        def __init__(self, passes: int = 3) -> None:
            super().__init__(cycles=passes)
            self.passes = passes

        def site_visits(self) -> int:
            return self.passes

    with STRATEGIES.registered("passes_plugin", Passes):
        config = tiny_config(
            tmp_path, "passes_plugin", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}},
            common={"strategy": {"kwargs": {"passes": 4}}, "train": {"loss": {"name": "dice_ce"}, "dp_sgd": {"target_epsilon": 3.0}}},
        )
        assert {site_run.train.dp_sgd.stages for site_run in load_config(config).site_runs} == {4}


def test_secure_aggregation_asks_what_the_strategy_declares():
    from siteflow.deploy.flower.secure import check_strategy
    from siteflow.strategies.federated import FedAvgStrategy, ScaffoldStrategy

    class LoggingFedAvg(FedAvgStrategy):
        def aggregate(self, round_number, global_weights, updates):
            return super().aggregate(round_number, global_weights, updates)

    check_strategy(LoggingFedAvg(rounds=1), "logging_fedavg")  # only logs and calls its parent: allowed
    with pytest.raises(ValueError, match="strategy 'scaffold' .* aggregates more than the weighted average"):
        check_strategy(ScaffoldStrategy(rounds=1), "scaffold")
