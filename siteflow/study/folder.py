"""The output folder of a study.

Layout of ``<output>/`` (``exps/studies/<name>/`` by default)::

    configs/<run>.yaml          the experiment config each run trains (written by the study)
    runs/<run>/seed<k>/         each run's run folder per seed (see siteflow.engine.seeds),
                                study_job.json once trained and tested (its time, its node)
    runs/<run>/results/         the run's results over its seeds (as train.py --seeds writes)
    logs/<run>_seed<k>.log      what each job printed
    progress.json               the study's progress: runs done, running, failed, time left
    comparisons.csv             every run against the reference, per test site, Holm-adjusted
    report.html                 the report
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from siteflow.core.atomic import safe_name
from siteflow.engine.seeds import seed_folder

JOB_RECORD = "study_job.json"
"""Written into a seed's run folder when its job has trained and tested it."""


@dataclass(frozen=True)
class JobKey:
    """One job of a study: run ``run`` trained with seed ``seed``."""

    run: str
    seed: int

    def __str__(self) -> str:
        return f"{self.run} seed {self.seed}"


class StudyFolder:
    """The files of a study's output folder (see the module docstring).

    Args:
        root: the study's output folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.progress = self.root / "progress.json"
        self.comparisons = self.root / "comparisons.csv"
        self.report = self.root / "report.html"

    def config_file(self, run: str) -> Path:
        return self.root / "configs" / f"{safe_name(run)}.yaml"

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / safe_name(run)

    def seed_dir(self, job: JobKey) -> Path:
        return seed_folder(self.run_dir(job.run), job.seed)

    def log_file(self, job: JobKey) -> Path:
        return self.root / "logs" / f"{safe_name(job.run)}_seed{job.seed}.log"

    def record(self, job: JobKey) -> dict | None:
        """The job's record (``study_job.json``: train_s, predict_s, node) if it finished."""
        path = self.seed_dir(job) / JOB_RECORD
        return json.loads(path.read_text()) if path.is_file() else None
