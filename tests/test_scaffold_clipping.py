"""SCAFFOLD refuses gradient clipping: its control variates are estimated from the sites'
unclipped SGD steps (``(x - y) / (K lr)``), and a clipped step would clip the drift
correction ``c - c_i`` with the gradient."""

from __future__ import annotations

import pytest
from experiments import tiny_config

from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.base import SetupRefused


def test_scaffold_refuses_gradient_clipping_naming_the_key(tmp_path):
    train = {"optimizer": {"name": "SGD", "kwargs": {"lr": 0.1}}, "gradient_clip_val": 1.0}
    config = load_config(tiny_config(tmp_path, "scaffold", sites=2, common={"strategy": {"kwargs": {"rounds": 1}}, "train": train}))
    run = ExperimentRun(config, tmp_path / "run")
    with pytest.raises(SetupRefused, match=r"set common\.train\.gradient_clip_val to null \(it is 1\.0\)"):
        run.execute()
    assert not (run.folder.checkpoints / "global" / "round_state.safetensors").exists()  # no round was saved
