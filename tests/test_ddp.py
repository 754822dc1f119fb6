"""Several devices: every site trained by Lightning DDP, here with two CPU processes (gloo), as
several GPUs would (``-g 0,1``); relay, whose manual optimisation DDP cannot synchronise, is
refused with one clear error before any site trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import tiny_config

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
OPTIONS = {
    "local": {},
    "sequential": {},
    "fedavg": {"rounds": 2},
    "relay": {"label_generator_channels": 16, "image_generator_channels": 8, "discriminator_channels": 8},
}


def train(config: Path, exps: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(exps), "--cpu-processes", "2", "-v"]  # -v: Lightning's own lines too
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=config.parent, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["local", "sequential", "fedavg"])
def test_every_site_trains_with_two_processes(tmp_path, strategy):
    config = tiny_config(tmp_path, strategy, common={"strategy": {"kwargs": OPTIONS[strategy]}})
    result = train(config, tmp_path / "exps")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MEMBER: 2/2" in result.stderr, "the second process did not join"
    summary = json.loads((tmp_path / "exps" / strategy / "t" / "results" / "summary.json").read_text())
    expected = {"local": ["site1", "site2"], "sequential": ["site1", "site2"], "fedavg": ["round1", "round2"]}[strategy]
    assert summary["stages"] == expected
    assert all(0.0 <= value <= 1.0 for value in summary["dice"]["final_per_site"].values())


@pytest.mark.slow
def test_relay_under_ddp_is_refused_before_any_site_trains(tmp_path):
    config = tiny_config(tmp_path, "relay", common={"strategy": {"kwargs": OPTIONS["relay"]}})
    result = train(config, tmp_path / "exps")
    assert result.returncode != 0
    assert "relay trains its generators, discriminators and solver with three optimisers" in result.stderr
    assert "which DDP over 2 processes cannot synchronise" in result.stderr
    assert not list((tmp_path / "exps").rglob("final.safetensors")), "a site finished training"
