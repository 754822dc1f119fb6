"""Sample-wise evaluation of trained weights on every site's test split (``predict_test.py``).

Writes into ``<run>/test_results/`` (segmentation; for multi-label classification see
:mod:`siteflow.engine.predict_multilabel`):

- ``samples.csv``: one row per (model, test site, image): Dice and HD95 per foreground class;
- ``summary.csv``: per (model, test site): number of images, and for each metric its mean with
  a 95% confidence interval (Student t over images);
- ``overlays/<model>/<site>.png``: a grid of image, truth and prediction for a few images;
- with ``save_nifti``: ``nifti/<model>/<site>/<image>_{image,pred,label}.nii.gz``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from siteflow.core.atomic import atomic_path, load_weights, write_text  # noqa: E402
from siteflow.config import ExperimentConfig  # noqa: E402
from siteflow.datasets.pooling import build_dataset, loader  # noqa: E402
from siteflow.metrics import SampleDice, hd95, mean_confidence_interval  # noqa: E402
from siteflow.engine.predict_multilabel import evaluate_multilabel  # noqa: E402
from siteflow.engine.runner import ExperimentRun  # noqa: E402

log = logging.getLogger(__name__)

OVERLAY_SAMPLES = 6
OVERLAY_COLOURS = ("#00e5ff", "#ff2bd6", "#ffe600", "#39ff14", "#ff7f0e", "#1f77ff", "#ffffff")


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
    run = ExperimentRun(config, run_dir, gpus=[gpu] if gpu is not None else None)
    models = _models_to_test(run, weights, stages)
    output = run.run_dir / "test_results"
    trainer = pl.Trainer(
        accelerator="gpu" if gpu is not None else "cpu",
        devices=[gpu] if gpu is not None else 1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    if run.task == "multilabel":
        sample_header, sample_rows, summary_header, summary_rows = evaluate_multilabel(run, models, trainer)
    else:
        sample_header, sample_rows, summary_header, summary_rows = _evaluate_segmentation(run, models, trainer, output, save_nifti)
    write_text(output / "samples.csv", _csv(sample_header, sample_rows))
    write_text(output / "summary.csv", _csv(summary_header, summary_rows))
    return output


@dataclass(frozen=True)
class ModelToTest:
    """Weights to evaluate, and each site's own version where sites keep some (FedBN, FFL)."""

    name: str
    weights: Path
    site_weights: dict[str, Path] = field(default_factory=dict)

    def weights_for(self, site: str) -> Path:
        return self.site_weights.get(site, self.weights)


def _evaluate_segmentation(
    run: ExperimentRun, models: Sequence[ModelToTest], trainer: pl.Trainer, output: Path, save_nifti: bool
) -> tuple[list[str], list[list], list[str], list[list]]:
    """Dice and HD95 per image, their means with confidence intervals, overlays (and NIfTI)."""
    foreground = run.class_names[1:]
    train = run.config.tasks[0].train
    sample_rows: list[list] = []
    summary_rows: list[list] = []
    for model in models:
        for site in (site for site in run.config.sites if site.available):
            learner = run.learner(run.solver_from(load_weights(model.weights_for(site.task_name))), train)
            dataset = build_dataset(site, "test")
            batches = trainer.predict(
                learner, dataloaders=loader(dataset, batch_size=train.batch_size, num_workers=run.config.num_workers, shuffle=False)
            )
            ids, dice, distance = _score(batches, run.class_names, run.ignore_index)
            for image_id, dice_row, distance_row in zip(ids, dice, distance):
                sample_rows.append([model.name, site.task_name, image_id, *dice_row, dice_row.mean(), *distance_row, distance_row.mean()])
            columns = [*dice.T, dice.mean(1), *distance.T, distance.mean(1)]
            summary_rows.append([model.name, site.task_name, len(ids), *(f for c in columns for f in mean_confidence_interval(c))])
            _plot_overlays(batches, run.class_names, output / "overlays" / _safe(model.name) / f"{_safe(site.task_name)}.png")
            if save_nifti:
                _save_nifti(batches, output / "nifti" / _safe(model.name) / _safe(site.task_name))
            log.info("%s on %s: mean sample Dice %.4f", model.name, site.task_name, dice.mean())
    metric_names = [f"dice_{c}" for c in foreground] + ["dice_mean"] + [f"hd95_{c}" for c in foreground] + ["hd95_mean"]
    summary_header = ["model", "site", "n"] + [f"{m}_{s}" for m in metric_names for s in ("mean", "ci_low", "ci_high")]
    return ["model", "site", "image_id", *metric_names], sample_rows, summary_header, summary_rows


def _models_to_test(run: ExperimentRun, weights: Path | None, stages: Sequence[str] | None) -> list[ModelToTest]:
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"--weights: file {str(weights)!r} does not exist")
        return [ModelToTest(weights.stem, weights)]
    models = [ModelToTest(name, path, own) for name, path, own in run.stage_weights()]
    if stages:
        unknown = sorted(set(stages) - {model.name for model in models})
        if unknown:
            raise ValueError(f"--stage: no finished stage named {unknown} in {run.run_dir} (finished: {[m.name for m in models]})")
        models = [model for model in models if model.name in stages]
    if not models:
        models = [
            ModelToTest(task.task_name, run.checkpoints_dir / task.checkpoint.load) for task in run.tasks if task.checkpoint.load
        ]
    if not models:
        raise FileNotFoundError(
            f"no trained weights in {run.run_dir}: train first with the same -c and -n, or give --weights"
        )
    return models


def _score(batches: list[dict], class_names: Sequence[str], ignore_index: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image ids, Dice (N, C-1) and HD95 (N, C-1) of every predicted sample."""
    num_classes = len(class_names)
    dice = SampleDice(num_classes, ignore_index=ignore_index, average="none")
    ids, distances = [], []
    for batch in batches:
        dice.update(batch["pred"], batch["label"])
        label, pred = batch["label"], batch["pred"]
        if ignore_index is not None:  # HD95 has no notion of ignored pixels: treat them as background
            ignored = label == ignore_index
            label, pred = label.masked_fill(ignored, 0), pred.masked_fill(ignored, 0)
        distances.append(hd95(pred, label, num_classes))
        ids.extend(batch["id"])
    return ids, dice.per_sample().double().numpy(), torch.cat(distances).double().numpy()


def _plot_overlays(batches: list[dict], class_names: Sequence[str], path: Path) -> None:
    """A grid of (image, truth, prediction) rows for the first few images, as a PNG."""
    images = torch.cat([b["image"] for b in batches])[:OVERLAY_SAMPLES]
    labels = torch.cat([b["label"] for b in batches])[:OVERLAY_SAMPLES]
    preds = torch.cat([b["pred"] for b in batches])[:OVERLAY_SAMPLES]
    ids = [i for b in batches for i in b["id"]][:OVERLAY_SAMPLES]
    if images.ndim != 4:  # volumes: show the middle slice
        middle = images.shape[2] // 2
        images, labels, preds = images[:, :, middle], labels[:, middle], preds[:, middle]
    figure, axes = plt.subplots(len(ids), 3, figsize=(6.6, 2.2 * len(ids)), dpi=100, squeeze=False)
    for row, (image, label, pred, image_id) in enumerate(zip(images, labels, preds, ids)):
        picture = image.float().permute(1, 2, 0).numpy()
        picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-8)
        picture = picture[..., 0] if picture.shape[-1] == 1 else picture[..., :3]
        for column, (mask, title) in enumerate([(None, image_id), (label, "truth"), (pred, "prediction")]):
            axis = axes[row, column]
            axis.imshow(picture, cmap="gray")
            if mask is not None:
                overlay = np.zeros((*mask.shape, 4))
                for class_id in range(1, len(class_names)):
                    colour = matplotlib.colors.to_rgb(OVERLAY_COLOURS[(class_id - 1) % len(OVERLAY_COLOURS)])
                    overlay[mask.numpy() == class_id] = (*colour, 0.5)
                axis.imshow(overlay)
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def _save_nifti(batches: list[dict], folder: Path) -> None:
    """Write every input, prediction and truth as ``<id>_{image,pred,label}.nii.gz``."""
    for batch in batches:
        for image, label, pred, image_id in zip(batch["image"], batch["label"], batch["pred"], batch["id"]):
            channels_last = image.float().movedim(0, -1).numpy()
            vector = channels_last.shape[-1] > 1
            volumes = {
                "image": sitk.GetImageFromArray(channels_last if vector else channels_last[..., 0], isVector=vector),
                "label": sitk.GetImageFromArray(label.numpy().astype(np.uint8)),
                "pred": sitk.GetImageFromArray(pred.numpy().astype(np.uint8)),
            }
            for kind, volume in volumes.items():
                with atomic_path(folder / f"{_safe(image_id)}_{kind}.nii.gz") as tmp:
                    sitk.WriteImage(volume, str(tmp), useCompression=True)


def _csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else v for v in row])
    return buffer.getvalue()


def _safe(name: str) -> str:
    """A file-name-safe version of a model, site or image name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
