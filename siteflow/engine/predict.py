"""Sample-wise evaluation of trained weights on every site's test split (``predict_test.py``).

Writes into ``<run>/test_results/`` what the study's task writes (see its ``predict``):
``samples.csv`` (one row per model, test site and image), ``summary.csv`` (per model and test
site, means with 95% confidence intervals) and the task's pictures (segmentation: overlay grids
and, with ``save_nifti``, NIfTI volumes).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl

from siteflow.config import ExperimentConfig
from siteflow.core.atomic import load_weights, write_text
from siteflow.core.finite import check_finite_weights
from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.engine.run_folder import RunFolder
from siteflow.tasks import ModelToTest, build_task


def predict_run(
    config: ExperimentConfig,
    run_dir: Path,
    *,
    gpu: int | None = None,
    save_nifti: bool = False,
    weights: Path | None = None,
    stages: Sequence[str] | None = None,
) -> Path:
    """Evaluate the models of a run (or a given weights file) on every test site.

    The models are, in order of preference: ``weights``; the finished stages of the training
    run in ``run_dir`` (only ``stages`` if given); the ``checkpoint.load`` file of each current
    task.

    Returns:
        The ``test_results`` folder.
    """
    folder = RunFolder(run_dir)
    task = build_task(config)
    solver = STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs).solver_from(task)
    trainer = pl.Trainer(
        accelerator="gpu" if gpu is not None else "cpu",
        devices=[gpu] if gpu is not None else 1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    output = task.prediction_output(folder.path / "test_results", save_volumes=save_nifti)
    for name, path, own in _weights_to_test(config, folder, weights, stages):
        model = ModelToTest(name, lambda site, path=path, own=own: solver(finite_weights(own.get(site, path))))
        for site in config.sites:
            if site.available:
                task.predict(model, site, trainer, output)
    write_text(output.folder / "samples.csv", csv_text(output.sample_header, output.sample_rows))
    write_text(output.folder / "summary.csv", csv_text(output.summary_header, output.summary_rows))
    return output.folder


def finite_weights(path: Path) -> Weights:
    """The weights in ``path``, refused if a tensor holds a NaN or an infinity (a diverged
    training's weights would score Dice 0 on every site, which is no result).

    Raises:
        NonFiniteWeights: naming the file and the first such tensor."""
    weights = load_weights(path)
    check_finite_weights(weights, str(path))
    return weights


def _weights_to_test(
    config: ExperimentConfig, folder: RunFolder, weights: Path | None, stages: Sequence[str] | None
) -> list[tuple[str, Path, dict[str, Path]]]:
    """(model name, weights file, each site's own weights file) of every model to test."""
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"--weights: file {str(weights)!r} does not exist")
        return [(weights.stem, weights, {})]
    models = folder.stage_weights()
    if stages:
        unknown = sorted(set(stages) - {name for name, _, _ in models})
        if unknown:
            raise ValueError(f"--stage: no finished stage named {unknown} in {folder.path} (finished: {[m[0] for m in models]})")
        models = [model for model in models if model[0] in stages]
    if not models:
        models = [(site_run.task_name, folder.checkpoints / site_run.checkpoint.load, {}) for site_run in config.site_runs if site_run.checkpoint.load]
    if not models:
        raise FileNotFoundError(f"no trained weights in {folder.path}: train first with the same -c and -n, or give --weights")
    return models


def csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A CSV table (floats with six decimals) of ``header`` and ``rows``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else v for v in row])
    return buffer.getvalue()
