"""A run killed with SIGKILL mid-site (or mid-federation) and started again ends with the weights
of a run that was never interrupted, bit for bit, whatever the strategy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import kill_once_written, tiny_config
from siteflow.core.atomic import load_weights

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RELAY = {"label_generator_channels": 16, "image_generator_channels": 8, "discriminator_channels": 8}

CASES = {
    # strategy: (config overrides, the file whose appearance means "mid-run", the final weights)
    "sequential": (
        {"current_tasks": {"task_ids": [1, 2], "task_confs": {2: {"train": {"epochs": 30}}}}},
        "checkpoints/task_2/last.ckpt",
        "checkpoints/task_2/final.safetensors",
    ),
    "relay": (
        {"common": {"strategy": {"kwargs": RELAY}}, "current_tasks": {"task_ids": [1, 2], "task_confs": {2: {"train": {"epochs": 16}}}}},
        "checkpoints/task_2/last.ckpt",
        "checkpoints/task_2/final.safetensors",
    ),
    "local": (
        {"current_tasks": {"task_ids": [1, 2], "task_confs": {1: {"train": {"epochs": 30}}}}},
        "checkpoints/task_1/last.ckpt",
        "checkpoints/task_1/final.safetensors",
    ),
    "fedavg": (
        {"common": {"strategy": {"kwargs": {"rounds": 4}}}},
        "checkpoints/global/round_state.safetensors",
        "checkpoints/global/final.safetensors",
    ),
    "fedadam": (
        {"common": {"strategy": {"kwargs": {"rounds": 4, "server_lr": 0.05}}}},
        "checkpoints/global/round_state.safetensors",
        "checkpoints/global/final.safetensors",
    ),
    "scaffold": (
        {"common": {"strategy": {"kwargs": {"rounds": 4}}, "train": {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.05}}}}},
        "checkpoints/global/round_state.safetensors",
        "checkpoints/global/final.safetensors",
    ),
}


def train(config: Path, exps: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(exps)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=config.parent)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path, strategy):
    overrides, marker, final = CASES[strategy]
    config = tiny_config(tmp_path, strategy, **overrides)
    whole = train(config, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed" / strategy / "t"
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "killed")]
    kill_once_written(command, run_dir / marker, cwd=tmp_path, env=ENV)
    assert not (run_dir / final).exists(), "the run finished before it could be interrupted"
    resumed = train(config, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr

    expected = load_weights(tmp_path / "whole" / strategy / "t" / final)
    got = load_weights(run_dir / final)
    assert got.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
