"""A strategy's own state, kept by the engine whatever the strategy, and what a strategy
declares about itself, asked by the privacy and deployment layers.

The plug-in of tests/plugins/annealed.py is a sequential strategy with a counter on ``self``
(the stages it trained, which set each stage's learning rate) and a visit counter of its own
name; tests/plugins/logging_fedavg.py is FedAvg whose ``aggregate`` only logs and calls its
parent. Both are registered through the ``siteflow.plugins`` entry point, as a user's would be.
"""

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
from siteflow.engine.runner import ExperimentRun
from siteflow.privacy import SITES_DIR
from siteflow.privacy.accounting import epsilon

PLUGINS = Path(__file__).resolve().parent / "plugins"
REPO = Path(__file__).resolve().parent.parent
NAMES = {"annealed": "annealed_plugin", "logging_fedavg": "logging_fedavg_plugin"}


@pytest.fixture
def plugins(tmp_path_factory, monkeypatch):
    """The plug-ins registered in this process, and importable by the processes it starts."""
    folder = tmp_path_factory.mktemp("entry_points")
    dist_info = folder / "siteflow_state_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: siteflow-state-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[siteflow.plugins]\n" + "".join(f"{m} = {m}\n" for m in NAMES))
    for path in (PLUGINS, folder):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), str(folder), os.environ.get("PYTHONPATH", "")]))
    load_components()
    yield
    for module, name in NAMES.items():
        STRATEGIES._entries.pop(name, None)
        sys.modules.pop(module, None)


def annealed_config(folder: Path, **train) -> Path:
    return tiny_config(
        folder, "annealed_plugin", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}},
        common={"strategy": {"kwargs": {"walks": 2, "decay": 0.1}}, "train": train},
    )


@pytest.mark.slow
def test_a_plugin_strategy_with_a_counter_resumes_with_it_after_a_kill(tmp_path, plugins):
    config = annealed_config(tmp_path)
    whole = ExperimentRun(load_config(config), tmp_path / "whole")
    whole.execute()
    assert whole.strategy.trained == 4  # two walks over two sites, each stage trained once
    last = Path("checkpoints") / "cycle2" / "task_2" / "final.safetensors"
    expected = load_weights(whole.folder.path / last)

    run_dir = tmp_path / "exps" / "annealed_plugin" / "t"
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "exps")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kill_once_written(command, run_dir / "checkpoints" / "cycle1" / "task_2" / "final.safetensors", cwd=tmp_path, env=env)
    assert not (run_dir / last).exists(), "the run finished before it could be interrupted"
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage cycle1/site2: finished before, reading its final weights" in result.stderr
    final = load_weights(run_dir / last)
    assert all(torch.equal(final[k], expected[k]) for k in expected), "the resumed run lost the strategy's counter"

    resumed = ExperimentRun(load_config(config), run_dir)  # a third run reads every stage back, the counter with it
    resumed.execute()
    assert resumed.strategy.trained == 4


@pytest.mark.slow
def test_a_plugin_that_names_its_visits_its_own_way_gets_the_epsilon_of_all_its_visits(tmp_path, plugins):
    config = load_config(annealed_config(tmp_path, dp_sgd={"target_epsilon": 3.0, "delta": 1e-3}))
    assert {site_run.train.dp_sgd.stages for site_run in config.site_runs} == {2}  # asked of site_visits, not guessed
    run = ExperimentRun(config, tmp_path / "run")
    run.execute()
    for site in ("site1", "site2"):
        ledger = json.loads((run.folder.results_dir / SITES_DIR / f"{site}.json").read_text())
        history = [(s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in ledger["stages"]]
        assert [s["stage"] for s in ledger["stages"]] == [f"cycle1/{site}", f"cycle2/{site}"]
        assert 2.5 < epsilon(history, delta=1e-3) <= 3.0  # the target, spent over both visits (not each)


def test_secure_aggregation_runs_a_fedavg_subclass_that_only_logs_and_refuses_scaffold_naming_both(plugins):
    from siteflow.deploy.flower.secure import check_strategy

    check_strategy(STRATEGIES.get("logging_fedavg_plugin")(rounds=1), "logging_fedavg_plugin")
    with pytest.raises(ValueError, match=r"secure-aggregation=true: strategy 'scaffold' \(common.strategy.name\) aggregates more"):
        check_strategy(STRATEGIES.get("scaffold")(rounds=1), "scaffold")



@pytest.mark.slow
def test_a_fedavg_subclass_that_only_logs_trains_a_deployed_round_under_secure_aggregation(tmp_path, plugins):
    from test_federated_flower import by_hand
    from test_secagg import assert_secure_average, secure_run

    config = tiny_config(tmp_path, "logging_fedavg_plugin", sites=3, common={"strategy": {"kwargs": {"rounds": 1}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "logging_fedavg_plugin" / "t")
    stdout = secure_run(tmp_path, config, sites=3, max_weight=16.0)  # its processes see the plug-in (PYTHONPATH)
    assert "round 1: aggregated" in stdout
    processed = next((tmp_path / "server").rglob("processed_config.yaml")).read_text()
    assert "name: logging_fedavg_plugin" in processed  # the server ran the plug-in, loaded through its entry point

    expected = by_hand(config, tmp_path / "by_hand", rounds=1, task_ids=(1, 2, 3))[0]  # the plaintext average
    final = load_weights(server.folder.checkpoints / "global" / "final.safetensors")
    assert_secure_average(final, expected, max_weight=16.0, samples=[4, 4, 4])
