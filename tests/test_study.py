"""siteflow-study: the study file's validation (errors naming the key), the grid, the workers
a machine allows, the progress line; end to end (slow): a tiny study that is killed, resumes,
is not trained again, and whose report and comparisons hold exactly the numbers its runs
wrote; the same study on a local Ray cluster of two worker nodes."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import kill_once_written, tiny_config
from siteflow.cli import study_main
from siteflow.study import StudyError, load_study
from siteflow.study.engines import LocalEngine, local_slots
from siteflow.study.folder import JobKey
from siteflow.study.progress import StudyTracker

REPO = Path(__file__).resolve().parent.parent


def write_study(folder: Path, **keys) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "output": str(folder / "out"), **keys}, sort_keys=False))
    return path


@pytest.fixture
def configs(tmp_path) -> dict[str, str]:
    return {
        "local": str(tiny_config(tmp_path, "local")),
        "fedavg": str(tiny_config(tmp_path, "fedavg", common={"strategy": {"name": "fedavg", "kwargs": {"rounds": 1}}})),
    }


def error_of(path: Path) -> str:
    with pytest.raises(StudyError) as raised:
        load_study(path)
    return str(raised.value)


def test_a_study_of_configs_and_a_grid(tmp_path, configs):
    study = load_study(write_study(
        tmp_path, configs=[configs["local"]], base=configs["fedavg"], seeds=[0, 2], reference="local",
        grid={"fedavg": {"local_epochs": [1, 2]}, "fedprox": {"mu": [0.1]}, "joint": None},
    ))
    assert [run.name for run in study.runs] == ["local", "fedavg_local_epochs-1", "fedavg_local_epochs-2", "fedprox", "joint"]
    fedprox = study.run("fedprox").config.strategy
    assert (fedprox.name, fedprox.kwargs) == ("fedprox", {"rounds": 1, "mu": 0.1})  # the base's rounds carried over
    assert study.run("joint").config.strategy.kwargs == {}
    assert study.run("fedavg_local_epochs-2").config.strategy.kwargs == {"rounds": 1, "local_epochs": 2}
    assert (study.seeds, study.reference, study.resamples, study.engine) == ((0, 2), "local", 2000, "local")


def test_overrides_apply_to_every_run(tmp_path, configs):
    study = load_study(write_study(
        tmp_path, configs=[configs["local"], {"config": configs["fedavg"], "options": {"local_epochs": 2}}],
        overrides={"common": {"train": {"epochs": 3}, "model": {"kwargs": {"base_channels": 8}}}},
    ))
    for run in study.runs:
        assert run.config.site_runs[0].train.epochs == 3 and run.config.model.kwargs["base_channels"] == 8
        assert run.raw["common"]["train"]["epochs"] == 3  # as written to configs/<run>.yaml
    assert study.run("fedavg").config.strategy.kwargs == {"rounds": 1, "local_epochs": 2}


def test_bad_studies_fail_naming_the_key(tmp_path, configs):
    twice = write_study(tmp_path, configs=[configs["local"], configs["fedavg"], configs["local"]])
    assert "study.yaml: configs[2]: the run name 'local' is given twice (first at configs[0])" in error_of(twice)
    grid = write_study(tmp_path, base=configs["fedavg"], grid={"fedprox": {"mue": [0.1]}})
    assert "grid.fedprox.mue: not an option of strategy fedprox; did you mean 'mu'?" in error_of(grid)
    typed = write_study(tmp_path, base=configs["fedavg"], grid={"fedprox": {"mu": ["big"]}})
    assert "grid.fedprox.mu: expected a number, got 'big'" in error_of(typed)
    unknown = write_study(tmp_path, base=configs["fedavg"], grid={"fedavgg": None})
    assert "grid.fedavgg: unknown strategy 'fedavgg'; did you mean 'fedavg'?" in error_of(unknown)
    reference = write_study(tmp_path, configs=[configs["local"], configs["fedavg"]], reference="joint")
    assert "reference: 'joint' is not a run of this study (runs: local, fedavg)" in error_of(reference)
    (tmp_path / "three").mkdir()
    (tmp_path / "other").mkdir()
    three = tiny_config(tmp_path / "three", "joint", sites=3)
    sites = write_study(tmp_path, configs=[configs["local"], str(three)])
    assert "configs[1]: run 'joint' cannot be compared with the reference 'local': it tests on the sites" in error_of(sites)
    other = tiny_config(tmp_path / "other", "joint", common={"dataset": {"kwargs": {"img_size": [16, 16], "root_path": str(tmp_path / "data")}}})
    data = write_study(tmp_path, configs=[configs["local"], str(other)])
    assert "site site1 has other test data (dataset.kwargs.img_size differ)" in error_of(data)
    assert "seeds: a seed is listed twice" in error_of(write_study(tmp_path, configs=[configs["local"]], seeds=[1, 1]))
    assert "workerz: unknown key; did you mean 'workers'?" in error_of(write_study(tmp_path, configs=[configs["local"]], workerz=2))
    overridden = write_study(tmp_path, configs=[configs["local"]], overrides={"common": {"train": {"epochs": 0}}})
    assert "overrides.common.train.epochs: run 'local': must be at least 1, got 0" in error_of(overridden)
    assert "overrides: expected a mapping of config keys" in error_of(write_study(tmp_path, configs=[configs["local"]], overrides=[1]))


def test_workers_are_checked_against_the_devices():
    assert local_slots(None, gpus=2, cpus=16) == local_slots(2, gpus=2, cpus=16)
    assert [slot.gpu for slot in local_slots(None, gpus=2, cpus=16)] == [0, 1]
    assert [slot.threads for slot in local_slots(2, gpus=0, cpus=16)] == [8, 8]  # the cores split
    assert [slot.threads for slot in local_slots(None, gpus=0, cpus=2)] == [2]
    with pytest.raises(StudyError, match=r"workers: 3 runs at a time, one per GPU, but this machine has 2 GPU\(s\)"):
        local_slots(3, gpus=2, cpus=16)
    with pytest.raises(StudyError, match=r"workers: 5 runs at a time, but this machine has 4 CPU core\(s\) and no GPU"):
        local_slots(5, gpus=0, cpus=4)


def test_the_command_refuses_more_workers_than_the_machine_has(tmp_path, configs, capsys):
    study = write_study(tmp_path, configs=[configs["local"]], workers=(os.cpu_count() or 1) + 1)
    with pytest.raises(SystemExit) as raised:
        study_main([str(study), "--dry-run"])
    assert raised.value.code == 2
    assert "workers:" in capsys.readouterr().err


def test_the_progress_line_and_file(tmp_path):
    now = [0.0]
    jobs = [JobKey("a", 0), JobKey("b", 0), JobKey("a", 1), JobKey("b", 1)]
    stream = io.StringIO()
    tracker = StudyTracker("demo", jobs, [JobKey("a", 0)], workers=2, path=tmp_path / "progress.json", stream=stream, clock=lambda: now[0])
    tracker.start(JobKey("b", 0))
    tracker.start(JobKey("a", 1))
    assert tracker.line() == "study demo: 1/4 done, 2 running, time left estimated after the first run (0s elapsed)"
    now[0] = 60.0
    tracker.finish(JobKey("b", 0))
    tracker.fail(JobKey("a", 1), "ValueError: bad")
    # one job of 60 s finished; one pending job left over 2 workers: 30 s
    assert tracker.line() == "study demo: 2/4 done, 0 running, 1 failed, about 30s left (1m00s elapsed)"
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["failed"] == [{"run": "a", "seed": 1, "error": "ValueError: bad"}]
    assert saved["pending"] == [{"run": "b", "seed": 1}] and saved["remaining_s"] == 30.0
    assert stream.getvalue().count("\n") == 4  # not a terminal: one line per change


def test_dry_run_lists_the_runs_and_their_cost(tmp_path, configs, capsys):
    study = write_study(tmp_path, configs=[configs["local"], configs["fedavg"]], seeds=[0, 1])
    assert study_main([str(study), "--dry-run", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "study tiny: 2 runs x 2 seeds = 4 jobs, reference local" in out
    # 2 sites of 4 training images (6 with a third for validation), 1 epoch: 8 images; fedavg, 1 round of 1 local epoch: 8
    assert re.search(r"local\s+local\s+0/2 done, 8 training images per seed", out)
    assert re.search(r"fedavg\s+fedavg\s+0/2 done, 8 training images per seed\s+\(rounds=1\)", out)
    assert not (tmp_path / "out" / "runs").exists()


def _samples_means(run_dir: Path, seeds: list[int]) -> dict[str, float]:
    """Each site's mean over its images of the per-image Dice averaged over the seeds, from
    the samples.csv files the runs wrote (the last model; a local run: each site's own)."""
    per_image: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        with open(run_dir / f"seed{seed}" / "test_results" / "samples.csv") as handle:
            rows = list(csv.DictReader(handle))
        local = any(row["model"] == row["site"] for row in rows)
        last = rows[-1]["model"]
        for row in rows:
            if row["model"] == (row["site"] if local else last):
                per_image.setdefault(row["site"], {}).setdefault(row["image_id"], []).append(float(row["dice_mean"]))
    return {site: float(np.mean([np.mean(v) for v in images.values()])) for site, images in per_image.items()}


@pytest.mark.slow
def test_a_tiny_study_resumes_after_a_kill_and_reports_its_runs_numbers(tmp_path, configs):
    study = write_study(tmp_path, configs=[configs["local"], configs["fedavg"]], seeds=[0], reference="fedavg", resamples=300)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "study.py"), str(study), "--workers", "1"]
    # killed (SIGKILL, no clean-up) once the local run's first site has finished
    first_site = out / "runs" / "local" / "seed0" / "checkpoints" / "task_1" / "final.safetensors"
    kill_once_written(command, first_site, cwd=tmp_path, env=env, timeout=900)  # a loaded 2-core machine takes minutes
    assert first_site.is_file() and not (out / "report.html").exists()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (out / "logs" / "local_seed0.log").read_text().count("[stage 1/2 site1]") == 1  # site1 trained once over both attempts
    assert "study tiny: 2/2 done" in result.stdout

    # the comparisons hold the numbers the runs wrote in their samples.csv
    local, fedavg = _samples_means(out / "runs" / "local", [0]), _samples_means(out / "runs" / "fedavg", [0])
    with open(out / "comparisons.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run"], r["reference"], r["site"], r["metric"]) for r in rows] == [
        ("local", "fedavg", "site1", "dice"), ("local", "fedavg", "site2", "dice")]
    for row in rows:
        assert float(row["run_value"]) == pytest.approx(local[row["site"]], abs=1e-6)
        assert float(row["reference_value"]) == pytest.approx(fedavg[row["site"]], abs=1e-6)
        assert float(row["difference"]) == pytest.approx(local[row["site"]] - fedavg[row["site"]], abs=1e-6)
        assert 2 / 301 <= float(row["p_bootstrap"]) <= float(row["p_holm"]) <= 1
    # and so does the report: the ranking's values, the first sentence, no p-value of 0.0000
    report = (out / "report.html").read_text()
    ranking = report[report.index('id="ranking"'):]
    for name, sites in (("local", local), ("fedavg", fedavg)):
        value = float(np.mean(list(sites.values())))
        row = ranking[ranking.index(f"<td>{name}</td>"):]
        assert float(re.search(r'data-value="([^"]+)"', row[row.index("<td>", 10):]).group(1)) == pytest.approx(value, abs=1e-12)
        final = json.loads((out / "runs" / name / "results" / "summary.json").read_text())["dice"]["final_mean"]
        final = final["values"][0] if isinstance(final, dict) else final  # one seed
        assert f"<td>{final:.3f} (1 seed)</td>" in row[:row.index("</tr>")]  # the spread over seeds, here of one
    best = max(("local", local), ("fedavg", fedavg), key=lambda item: np.mean(list(item[1].values())))
    assert f"{best[0]} ranks first of 2 runs with a mean Dice of {np.mean(list(best[1].values())):.3f}" in report
    assert "0.0000" not in report[report.index('id="comparisons"'):report.index("Test images")]
    assert "final_mean" not in report[:report.index("<h2>")]  # no raw key on the first screen

    # the same command again trains nothing
    records = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/study_job.json")}
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in records} == records
    progress = json.loads((out / "progress.json").read_text())
    assert (progress["done"], progress["finished"], len(progress["done_before"])) == (2, [], 2)


@pytest.mark.slow
def test_a_study_on_a_local_ray_cluster_of_two_workers(tmp_path, configs, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from siteflow.study.engines import RayEngine
    from siteflow.study.runner import run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head schedules, two nodes work
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        engine = RayEngine(cluster.address, workers=None)
        assert (engine.workers, engine.threads, engine.nodes) == (2, 1, 3)
        with pytest.raises(StudyError, match=r"workers: 3 runs at a time, but the Ray cluster has 2 CPU core\(s\) and no GPU"):
            RayEngine(cluster.address, workers=3)
        study = load_study(write_study(tmp_path, configs=[configs["local"], configs["fedavg"]], seeds=[0], resamples=100))
        outcome = run_study(study, engine, stream=io.StringIO(), cwd=tmp_path)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert outcome.failed == {} and outcome.report is not None and outcome.report.is_file()
    workers = {json.loads(p.read_text())["worker"] for p in (tmp_path / "out").glob("runs/*/seed0/study_job.json")}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers)  # one job on each worker node
