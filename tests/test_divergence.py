"""Training that diverges stops with the site, epoch and step named, keeps its last finite
checkpoint and writes no final weights nor hand-over file; non-finite weights are refused
wherever they would be written or tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import tiny_config
from siteflow.core.atomic import save_weights
from siteflow.core.finite import NonFiniteWeights
from siteflow.engine.run_folder import RunFolder
from siteflow.handover import write_handover

REPO = Path(__file__).resolve().parent.parent
DIVERGING = {"train": {"epochs": 3, "optimizer": {"name": "SGD", "kwargs": {"lr": 1e30}}}}


@pytest.mark.slow
def test_a_diverging_site_stops_naming_site_epoch_and_step_and_writes_nothing_non_finite(tmp_path):
    config = tiny_config(tmp_path, "sequential", sites=1, common=DIVERGING)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "lr", "--exps-root", str(tmp_path / "exps")],
        capture_output=True, text=True, cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert message.startswith("train.py: stopped: site site1, stage site1: training diverged at epoch 1, step 2 (batch 0): the loss is nan")
    assert "last.ckpt keeps the last epoch that ended finite" in message and "common.train.optimizer.kwargs.lr" in message
    stage = tmp_path / "exps" / "sequential" / "lr" / "checkpoints" / "task_1"
    assert sorted(p.name for p in stage.iterdir()) == ["last.ckpt"]  # no final.safetensors, no handover.safetensors
    kept = torch.load(stage / "last.ckpt", map_location="cpu", weights_only=True)
    assert kept["epoch"] == 0
    assert all(bool(torch.isfinite(t).all()) for t in kept["state_dict"].values() if t.is_floating_point())


def test_non_finite_weights_are_never_written_as_final_weights_or_a_handover(tmp_path):
    weights = {"a.weight": torch.ones(3), "b.bias": torch.tensor([0.0, float("inf")]), "n": torch.tensor(2)}
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(NonFiniteWeights, match=r"final.safetensors: not written: .*'b.bias' holds 1 of 2"):
        folder.save_final("round1", weights, save_dir="global")
    with pytest.raises(NonFiniteWeights, match=r"handover.safetensors: not written: .*'b.bias' holds 1 of 2"):
        write_handover(tmp_path / "handover.safetensors", weights, strategy="sequential", model_name="unet", model_kwargs={}, sites=[])
    assert not (tmp_path / "handover.safetensors").exists() and not (folder.checkpoints / "global" / "final.safetensors").exists()


@pytest.mark.slow
def test_predict_test_refuses_non_finite_weights_naming_the_tensor(tmp_path):
    config = tiny_config(tmp_path, "sequential", sites=1)
    weights = tmp_path / "diverged.safetensors"
    from siteflow.config import load_config
    from siteflow.engine.runner import ExperimentRun

    run = ExperimentRun(load_config(config), tmp_path / "probe")
    good = run.start(run.site_runs[0], lambda: run.strategy.build_network(run.task)).weights
    name = sorted(k for k, v in good.items() if v.is_floating_point())[0]
    save_weights(weights, {**good, name: torch.full_like(good[name], float("nan"))})
    result = subprocess.run(
        [sys.executable, str(REPO / "predict_test.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "exps"),
         "--weights", str(weights)],
        capture_output=True, text=True, cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"{weights}: the weights hold values that are not finite (NaN or infinity): {name!r} holds" in result.stderr
    assert not (tmp_path / "exps" / "sequential" / "t" / "test_results" / "samples.csv").exists()
