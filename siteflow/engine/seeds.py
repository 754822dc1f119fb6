"""One study repeated over seeds: a run folder per seed, and their mean and spread.

Layout of ``exps/<config>/<note>/`` for ``train.py --seeds 0,1,2``::

    seed0/, seed1/, seed2/   each a whole run folder (see :mod:`siteflow.engine.run_folder`),
                             resumable as a run of one seed is
    results/                 the site matrices' mean and standard deviation over the seeds,
                             summary.json with each value's mean, std and every seed's value
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

from siteflow.config import ExperimentConfig
from siteflow.engine.progress import StudyProgress
from siteflow.engine.results import write_seed_results
from siteflow.engine.runner import ExperimentRun

log = logging.getLogger(__name__)

SEED_FOLDER = re.compile(r"seed(\d+)")


def seed_folder(run_dir: Path, seed: int) -> Path:
    """The run folder of ``seed`` inside a repeated study's folder: ``<run_dir>/seed<seed>``."""
    return Path(run_dir) / f"seed{seed}"


def seed_folders(run_dir: Path) -> dict[int, Path]:
    """The ``seed<k>`` sub-folders of ``run_dir`` by seed, in increasing order (empty for a
    run of one seed)."""
    found = {int(m.group(1)): p for p in Path(run_dir).glob("seed*") if p.is_dir() and (m := SEED_FOLDER.fullmatch(p.name))}
    return dict(sorted(found.items()))


def run_seeds(config: ExperimentConfig, run_dir: Path, seeds: Sequence[int], **run_options: Any) -> dict:
    """Run the study of ``config`` once per seed, each in :func:`seed_folder` (finished seeds
    are read back, an interrupted one resumes), then write the mean and spread over the seeds
    into ``<run_dir>/results/`` (see :func:`~siteflow.engine.results.write_seed_results`).

    Args:
        seeds: distinct seeds, each replacing ``common.seed``.
        run_options: passed to :class:`ExperimentRun` (gpus, cpu_processes, key_file).

    Returns:
        The summary over seeds.
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds: expected distinct seeds, got {list(seeds)}")
    summaries: dict[int, dict] = {}
    rows = {}
    started = time.perf_counter()
    progress = StudyProgress(len(seeds))
    for index, seed in enumerate(seeds):
        log.info("seed %d (%d of %d)", seed, index + 1, len(seeds))
        run = ExperimentRun(dataclasses.replace(config, seed=seed), seed_folder(run_dir, seed), progress=progress, **run_options)
        summaries[seed] = run.execute(seed_index=index + 1)
        rows[seed] = run.results
        elapsed = time.perf_counter() - started
        log.info(
            "seed %d finished: %d of %d seeds, %.0f s elapsed, about %.0f s remaining",
            seed, index + 1, len(seeds), elapsed, elapsed / (index + 1) * (len(seeds) - index - 1),
        )
    if not all(summaries.values()):  # not the first process of a DDP run
        return {}
    return write_seed_results(Path(run_dir) / "results", summaries, rows)
