"""A study repeated over seeds (``train.py --seeds``), its mean and spread, and
``deterministic: true`` runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from experiments import tiny_config
from siteflow.cli import train_main
from siteflow.config import ConfigError, load_config
from siteflow.core.atomic import load_weights
from siteflow.core.site_matrix import StageResult
from siteflow.engine.results import spread, write_seed_results
from siteflow.engine.runner import ExperimentRun
from siteflow.engine.seeds import seed_folders


def _matrix(path):
    """A site-matrix CSV as {stage: [values of the sites]}."""
    with open(path) as handle:
        return {row["after_stage"]: [float(row["site1"]), float(row["site2"])] for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_train_over_seeds_writes_each_seed_and_their_mean_and_spread(tmp_path, capsys):
    config = tiny_config(tmp_path, "sequential")
    argv = ["-c", str(config), "-n", "repeats", "--exps-root", str(tmp_path / "exps"), "--seeds", "0,3"]
    assert train_main(argv) == 0
    (run_dir,) = (tmp_path / "exps").glob("*/repeats")
    folders = seed_folders(run_dir)
    assert list(folders) == [0, 3]
    seeds = {seed: json.loads((folder / "results" / "summary.json").read_text()) for seed, folder in folders.items()}
    for seed, folder in folders.items():
        assert (folder / "processed_config.yaml").read_text().count(f"seed: {seed}\n") == 1
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["seeds"] == [0, 3]
    finals = [seeds[0]["dice"]["final_mean"], seeds[3]["dice"]["final_mean"]]
    assert finals[0] != finals[1]  # another seed, another run
    assert summary["dice"]["final_mean"]["values"] == pytest.approx(finals)
    assert summary["dice"]["final_mean"]["mean"] == pytest.approx((finals[0] + finals[1]) / 2)
    assert summary["dice"]["final_mean"]["std"] == pytest.approx(abs(finals[0] - finals[1]) / np.sqrt(2))
    transfers = [seeds[s]["dice"]["backward_transfer"] for s in (0, 3)]
    assert summary["dice"]["backward_transfer"]["mean"] == pytest.approx(np.mean(transfers))
    assert summary["dice"]["final_per_site"]["site2"]["values"] == pytest.approx([seeds[s]["dice"]["final_per_site"]["site2"] for s in (0, 3)])
    mean, std = _matrix(run_dir / "results" / "site_matrix_dice.csv"), _matrix(run_dir / "results" / "site_matrix_dice_std.csv")
    each = [_matrix(folder / "results" / "site_matrix_dice.csv") for folder in folders.values()]
    for stage in mean:
        assert mean[stage] == pytest.approx(np.mean([m[stage] for m in each], axis=0), abs=2e-6)
        assert std[stage] == pytest.approx(np.std([m[stage] for m in each], axis=0, ddof=1), abs=2e-6)
    assert (run_dir / "results" / "site_matrix_dice.png").read_bytes()[:4] == b"\x89PNG"
    assert "+/-" in capsys.readouterr().out
    (log_file,) = (run_dir / "logs").glob("train_*.log")
    log_text = log_file.read_text()
    assert "seed 3 (2 of 2)" in log_text and "seed 3 finished: 2 of 2 seeds" in log_text
    assert "study sequential: 2 stages recorded" in log_text

    final = folders[3] / "checkpoints" / "task_2" / "final.safetensors"
    written = final.stat().st_mtime_ns
    assert train_main(argv) == 0  # resumes: every seed finished, nothing trains again
    assert final.stat().st_mtime_ns == written
    assert json.loads((run_dir / "results" / "summary.json").read_text()) == summary


def test_spread_over_seeds_by_hand(tmp_path):
    rows = {
        seed: [StageResult("a", "site1", {"site1": {"dice": d1}, "site2": {"dice": d2}}), StageResult("b", "site2", {"site1": {"dice": e1}, "site2": {"dice": e2}})]
        for seed, (d1, d2, e1, e2) in {0: (0.5, 0.1, 0.3, 0.7), 1: (0.7, 0.3, 0.5, 0.9), 2: (0.6, 0.2, 0.1, 0.8)}.items()
    }
    summaries = {
        seed: {"experiment": "x", "strategy": "sequential", "sites": ["site1", "site2"], "stages": ["a", "b"], "metrics": ["dice"],
               "dice": {"final_mean": (r[1].values["site1"]["dice"] + r[1].values["site2"]["dice"]) / 2,
                        "final_per_site": {"site1": r[1].values["site1"]["dice"], "site2": r[1].values["site2"]["dice"]},
                        "backward_transfer": r[1].values["site1"]["dice"] - r[0].values["site1"]["dice"]}}
        for seed, r in rows.items()
    }
    summary = write_seed_results(tmp_path, summaries, rows)
    final = summary["dice"]["final_mean"]
    assert (final["mean"], final["std"]) == pytest.approx((0.55, np.std([0.5, 0.7, 0.45], ddof=1)))
    assert final["values"] == pytest.approx([0.5, 0.7, 0.45])
    assert summary["dice"]["backward_transfer"]["values"] == pytest.approx([-0.2, -0.2, -0.5])
    assert summary["dice"]["final_per_site"]["site1"]["mean"] == pytest.approx(0.3)
    assert _matrix(tmp_path / "site_matrix_dice.csv") == {"a": pytest.approx([0.6, 0.2]), "b": pytest.approx([0.3, 0.8])}
    assert _matrix(tmp_path / "site_matrix_dice_std.csv")["a"] == pytest.approx([0.1, 0.1])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert spread([0.5]) == {"mean": 0.5, "std": None, "values": [0.5]}
    assert spread([0.5, None]) is None

    summaries[2] = {**summaries[2], "stages": ["a"]}
    with pytest.raises(ValueError, match=r"seed 2 has the stages \['a'\], seed 0 has \['a', 'b'\]"):
        write_seed_results(tmp_path, summaries, rows)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], "--seeds: expected distinct non-negative integers like 0,1,2, got '0,x'"),
    (["--seeds", "1,1"], "--seeds: expected distinct non-negative integers"),
    (["--seeds", "0,1", "--task-id", "1"], "--seeds repeats a whole study"),
])
def test_bad_seeds_are_refused(tmp_path, capsys, argv, message):
    config = tiny_config(tmp_path, "sequential")
    with pytest.raises(SystemExit) as raised:
        train_main(["-c", str(config), "--exps-root", str(tmp_path / "exps"), *argv])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_deterministic_runs_end_with_identical_weights(tmp_path):
    config = load_config(tiny_config(tmp_path, "sequential", common={"deterministic": True}))
    assert config.deterministic and config.processed()["deterministic"] is True
    try:
        finals = []
        for name in ("one", "two"):
            ExperimentRun(config, tmp_path / name).execute()
            assert torch.are_deterministic_algorithms_enabled()
            finals.append(load_weights(tmp_path / name / "checkpoints" / "task_2" / "final.safetensors"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][key], finals[1][key]) for key in finals[0])


def test_deterministic_must_be_a_bool(tmp_path):
    with pytest.raises(ConfigError, match=r"common\.deterministic"):
        load_config(tiny_config(tmp_path, "sequential", common={"deterministic": "yes"}))
