"""``siteflow-infer``'s loop over the inputs: reading (and preprocessing) the next inputs in a
thread, and mapping the last predictions back to their inputs' grids and writing them in
another, while the model computes, a progress bar with the time left, the
inputs that fail listed with their reason while the rest go on, and ``predictions.csv``.

``predictions.csv`` (one row per input that succeeded):

* segmentation: ``input``, ``model``, ``outputs`` (the files written, ``;``-separated), and per
  class its ``pixels_<class>`` and ``mm2_<class>`` (2D) or ``voxels_<class>`` and
  ``mm3_<class>`` (volumes; empty where the spacing is unknown);
* multi-label: ``input``, ``model``, ``p_<label>`` (sigmoid probability) of each label the model
  answers, and ``positive_<label>`` (1 at or above the validation-chosen threshold, else 0)
  where the model has thresholds.

``failures.csv`` (``input``, ``reason``) lists the inputs that failed, when any did.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siteflow.core.atomic import OutputError, write_text
from siteflow.datasets import DataError
from siteflow.engine.predict import csv_text
from siteflow.inference.inputs import InputError, InputItem, ReadInput, read_input
from siteflow.inference.predictor import Prediction, Predictor
from siteflow.inference.recipe import ModelRecipe
from siteflow.inference.writers import output_files, write_outputs

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"
FAILURES_CSV = "failures.csv"
PREFETCH = 2
"""Inputs read ahead of the one the model computes."""
INPUT_FAILURES = (DataError, ValueError, OSError, RuntimeError)
"""What reading, predicting or writing one input may raise that fails that input alone."""


@dataclass
class InferenceReport:
    """What a run over the inputs did."""

    folder: Path
    rows: list[list] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def check_output_folder(output: Path, roots: Sequence[Path], items: Sequence[InputItem], recipe: ModelRecipe) -> None:
    """Raises InputError naming the folder when writing the outputs into ``output`` could
    overwrite or mix with the inputs: ``output`` is an input folder (``roots``) or inside one,
    or an output file would be an input file; or naming two inputs whose outputs would share
    a name (files of the same name given from different folders)."""
    target = output.resolve()
    for root in map(Path, roots):
        if root.is_dir() and (target == root.resolve() or root.resolve() in target.parents):
            raise InputError(f"output folder {output} is inside input folder {root}: its outputs would mix with the inputs; choose another -o")
    inputs = {item.path.resolve() for item in items}
    writers: dict[Path, Path] = {}
    for item in items:
        for path in output_files(recipe, item.kind, item.name, probabilities=True):
            if (target / path).resolve() in inputs:
                raise InputError(f"output folder {output} would overwrite input {target / path}; choose another -o")
            if path in writers:
                raise InputError(f"inputs {writers[path]} and {item.path} would both write {path}: give their folder, or rename one")
            writers[path] = item.path
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder {output} is a file")


def run_inference(
    predictor: Predictor,
    items: Sequence[InputItem],
    output: Path,
    *,
    progress: bool = True,
) -> InferenceReport:
    """Predict every input of ``items`` and write the outputs into ``output`` (see the module),
    reading ahead and writing behind in threads while the model runs."""
    recipe = predictor.recipe
    report = InferenceReport(Path(output))
    started = time.perf_counter()
    bar = tqdm(total=len(items), unit="input", desc="siteflow-infer", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        pending: deque[tuple[InputItem, Future]] = deque()
        queue = iter(items)
        writes: list[tuple[InputItem, ReadInput, Future]] = []

        def read_ahead() -> None:
            while len(pending) < PREFETCH and (item := next(queue, None)) is not None:
                pending.append((item, reader.submit(read_input, item, recipe)))

        read_ahead()
        while pending:
            item, future = pending.popleft()
            read_ahead()
            try:
                read: ReadInput = future.result()
                outputs = predictor.compute(read)
            except INPUT_FAILURES as error:
                _fail(report, item, error)
                bar.update()
                continue
            writes.append((item, read, writer.submit(_finish_and_write, predictor, report.folder, read, outputs)))
            bar.update()
        for item, read, future in writes:
            try:
                prediction, files = future.result()
            except INPUT_FAILURES as error:
                _fail(report, item, error)
                continue
            report.rows.append(prediction_row(recipe, read, prediction, [f.relative_to(report.folder) for f in files]))
    bar.close()
    report.seconds = time.perf_counter() - started
    write_text(report.folder / PREDICTIONS_CSV, csv_text(prediction_header(recipe), report.rows))
    if report.failures:
        write_text(report.folder / FAILURES_CSV, csv_text(["input", "reason"], [[str(p), r] for p, r in report.failures]))
    return report


def _finish_and_write(predictor: Predictor, folder: Path, read: ReadInput, outputs: torch.Tensor) -> tuple[Prediction, list[Path]]:
    """The prediction on the input's own grid (see :meth:`Predictor.finish`) and its files."""
    prediction = predictor.finish(read, outputs)
    return prediction, write_outputs(folder, predictor.recipe, read, prediction)


def _fail(report: InferenceReport, item: InputItem, error: BaseException) -> None:
    reason = str(error) if isinstance(error, (DataError, OutputError)) else f"{type(error).__name__}: {error}"
    log.warning("%s failed: %s", item.path, reason)
    report.failures.append((item.path, reason))


def prediction_header(recipe: ModelRecipe) -> list[str]:
    """The columns of ``predictions.csv`` (see the module)."""
    if recipe.task == "multilabel":
        decisions = [f"positive_{label}" for label in recipe.answered] if recipe.thresholds is not None else []
        return ["input", "model", *(f"p_{label}" for label in recipe.answered), *decisions]
    count, physical = ("pixels", "mm2") if recipe.spatial_dims == 2 else ("voxels", "mm3")
    classes = recipe.class_names
    return ["input", "model", "outputs", *(f"{count}_{c}" for c in classes), *(f"{physical}_{c}" for c in classes)]


def prediction_row(recipe: ModelRecipe, read: ReadInput, prediction: Prediction, files: Sequence[Path]) -> list:
    """One input's row of ``predictions.csv``."""
    if recipe.task == "multilabel":
        columns = [recipe.class_names.index(label) for label in recipe.answered]
        scores = [float(prediction.scores[c]) for c in columns]
        decisions = [] if recipe.thresholds is None else [int(prediction.scores[c] >= recipe.thresholds[c]) for c in columns]
        return [str(read.item.path), recipe.name, *scores, *decisions]
    counts = prediction.class_counts(len(recipe.class_names))
    size = None if read.spacing is None else float(np.prod(read.spacing))
    physical = ["" if size is None else float(n) * size for n in counts]
    return [str(read.item.path), recipe.name, ";".join(map(str, files)), *(int(n) for n in counts), *physical]

