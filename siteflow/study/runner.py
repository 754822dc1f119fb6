"""A study from its file to its report: write each run's config, train and test every
(run, seed) job on the engine (jobs done before are not run again, an interrupted one
resumes), gather each run's seeds, compare every run with the reference and write the report.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from siteflow.core.atomic import write_text
from siteflow.engine.results import write_seed_results
from siteflow.engine.run_folder import RunFolder
from siteflow.engine.progress import format_duration
from siteflow.reporting.runs import read_run
from siteflow.reporting.study import RunCost, analyse_study, comparisons_csv
from siteflow.reporting.study_report import write_study_report
from siteflow.study.costs import communicated_bytes, training_images
from siteflow.study.engines import Engine, Job
from siteflow.study.folder import JobKey, StudyFolder
from siteflow.study.progress import StudyTracker
from siteflow.study.spec import RunSpec, Study

log = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    """What a study run ended with: the failed jobs (with their error), the runs that could
    not be gathered, and the report (None when the reference run is not complete)."""

    failed: dict[JobKey, str] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    report: Path | None = None


def study_jobs(study: Study, folder: StudyFolder) -> list[Job]:
    """Every job of ``study``, seed by seed, each run in the file's order."""
    return [
        Job(JobKey(run.name, seed), folder.config_file(run.name), folder.seed_dir(JobKey(run.name, seed)), folder.log_file(JobKey(run.name, seed)))
        for seed in study.seeds
        for run in study.runs
    ]


def write_configs(study: Study, folder: StudyFolder) -> None:
    """Write each run's experiment config, ``configs/<run>.yaml``, that its jobs train."""
    for run in study.runs:
        write_text(folder.config_file(run.name), yaml.safe_dump(run.raw, sort_keys=False))


def dry_run(study: Study, engine: Engine, stream: TextIO | None = None) -> list[dict]:
    """List the study's runs with their estimated cost (the images each seed trains on and,
    where jobs of this study finished before, the time that rate gives) on ``stream`` (default:
    standard output) without training."""
    stream = stream or sys.stdout
    folder = StudyFolder(study.output)
    jobs = study_jobs(study, folder)
    records = {job.key: folder.record(job.key) for job in jobs}
    images = {run.name: training_images(run.config) for run in study.runs}
    done_images = sum(images[key.run] for key, record in records.items() if record)
    done_seconds = sum(record["train_s"] + record["predict_s"] for record in records.values() if record)
    rate = done_seconds / done_images if done_images else None
    rows = []
    for run in study.runs:
        done = sum(1 for seed in study.seeds if records[JobKey(run.name, seed)])
        left = len(study.seeds) - done
        rows.append({
            "run": run.name, "strategy": run.strategy, "options": run.config.strategy.kwargs, "seeds": list(study.seeds),
            "done": done, "images_per_seed": images[run.name], "estimated_s": None if rate is None else rate * images[run.name] * left,
        })
    stream.write(f"study {study.name}: {len(study.runs)} runs x {len(study.seeds)} seeds = {len(jobs)} jobs, reference {study.reference}, "
                 f"{engine.describe()}, output {folder.root}\n")
    width = max(len(row["run"]) for row in rows)
    for row in rows:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        estimate = "" if row["estimated_s"] is None else f", about {format_duration(row['estimated_s'])} left"
        stream.write(f"  {row['run']:<{width}}  {row['strategy']:<10} {row['done']}/{len(study.seeds)} done, "
                     f"{row['images_per_seed']} training images per seed{estimate}  ({options})\n")
    total_images = sum(row["images_per_seed"] * (len(study.seeds) - row["done"]) for row in rows)
    if rate is None:
        stream.write(f"to train: {total_images} images in all; the time per image is measured once a run has finished\n")
    else:
        total = rate * total_images / engine.workers
        stream.write(f"to train: {total_images} images in all, about {format_duration(total)} on {engine.workers} worker(s) "
                     f"at the {rate * 1000:.1f} ms per image the finished runs took\n")
    return rows


def run_study(study: Study, engine: Engine, *, stream: TextIO | None = None, cwd: Path | None = None) -> StudyOutcome:
    """Run ``study`` on ``engine`` (see the module docstring), its progress on ``stream``
    (default: standard output), the jobs started in ``cwd`` (default: this process's working
    folder, where relative paths in the configs lead); returns its outcome."""
    folder = StudyFolder(study.output)
    write_configs(study, folder)
    jobs = study_jobs(study, folder)
    done = [job.key for job in jobs if folder.record(job.key)]
    tracker = StudyTracker(study.name, [job.key for job in jobs], done, workers=engine.workers, path=folder.progress, stream=stream or sys.stdout)
    pending = [job for job in jobs if job.key not in set(done)]
    if pending:
        engine.run(pending, tracker, cwd=cwd or Path.cwd())
    tracker.close()
    outcome = StudyOutcome(failed=dict(tracker.failed))
    finished = {}
    for run in study.runs:
        if all(folder.record(JobKey(run.name, seed)) for seed in study.seeds):
            gather_seeds(folder, run, study.seeds)
            finished[run.name] = read_run(folder.run_dir(run.name))
        else:
            outcome.incomplete.append(run.name)
    if study.reference not in finished:
        return outcome
    costs = {name: run_cost(folder, study.run(name), study.seeds, finished[name].folders) for name in finished}
    results = analyse_study(finished, study.reference, costs, n_resamples=study.resamples, title=study.name)
    write_text(folder.comparisons, comparisons_csv(results))
    outcome.report = write_study_report(results, finished, folder.report, missing=outcome.incomplete)
    return outcome


def gather_seeds(folder: StudyFolder, run: RunSpec, seeds: tuple[int, ...]) -> dict:
    """Write ``runs/<run>/results/`` over the run's seeds, as ``train.py --seeds`` does."""
    summaries, rows = {}, {}
    for seed in seeds:
        seed_dir = folder.seed_dir(JobKey(run.name, seed))
        summaries[seed] = json.loads((seed_dir / "results" / "summary.json").read_text())
        rows[seed] = RunFolder(seed_dir).results
    return write_seed_results(folder.run_dir(run.name) / "results", summaries, rows)


def run_cost(folder: StudyFolder, run: RunSpec, seeds: tuple[int, ...], seed_folders: dict) -> RunCost:
    """A finished run's cost: mean training seconds over its seeds (from the jobs' records),
    the mean bytes a site sends and receives (federated runs), and the largest privacy budget
    a site spent (epsilon, where the run trains privately; the largest over seeds)."""
    records = [folder.record(JobKey(run.name, seed)) for seed in seeds]
    sent = communicated_bytes(run.config)
    epsilons = []
    for seed_dir in seed_folders.values():
        privacy = json.loads((Path(seed_dir) / "results" / "summary.json").read_text()).get("privacy", {})
        epsilons += [entry["epsilon"] for entry in privacy.get("dp_sgd", {}).values()]
        if "epsilon" in privacy.get("central_dp", {}):
            epsilons.append(privacy["central_dp"]["epsilon"])
    return RunCost(
        train_s=sum(r["train_s"] for r in records) / len(records),
        bytes_per_site=None if sent is None else sum(sent.values()) / len(sent),
        epsilon=max(epsilons) if epsilons else None,
    )
