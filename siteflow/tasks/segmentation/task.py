"""Segmentation: integer label maps; Dice, HD95, average surface distance, IoU, sensitivity and
specificity at each image's native resolution (volumes: on their preprocessed grid, distances
in mm)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
from torch import nn

from siteflow.config import SiteConfig, TrainConfig
from siteflow.core.atomic import safe_name
from siteflow.core.registry import TASKS
from siteflow.datasets.pooling import loader
from siteflow.datasets.volumes import VolumeDataset
from siteflow.metrics import bootstrap_confidence_interval, mean_confidence_interval
from siteflow.tasks.base import ExtraLoss, ModelToTest, PredictionOutput, Task
from siteflow.tasks.segmentation.learner import SegmentationLearner
from siteflow.tasks.segmentation.prediction import SAMPLE_METRICS, plot_overlays, save_nifti, score_samples

log = logging.getLogger(__name__)


SUMMARY_STATISTICS = ("mean", "ci_low", "ci_high", "boot_low", "boot_high")
"""The summary of a per-image score: its mean, the Student t 95% interval and the percentile
bootstrap 95% interval (no assumption of normality: per-image Dice is often skewed)."""


def summary_statistics(column: np.ndarray) -> tuple[float, ...]:
    """:data:`SUMMARY_STATISTICS` of one per-image score ``column`` (N,), over the images where
    it is defined: a NaN (sensitivity of an image without the class, specificity of one that is
    all class) is left out, and a column with no defined value gives NaN everywhere."""
    defined = column[~np.isnan(column)]
    if defined.size == 0:
        return (math.nan,) * len(SUMMARY_STATISTICS)
    mean, low, high = mean_confidence_interval(defined)
    _, boot_low, boot_high = bootstrap_confidence_interval(np.mean, defined)
    return mean, low, high, boot_low, boot_high


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """Per-pixel classes; the site matrix holds pooled and per-sample mean foreground Dice, the
    per-site test results IoU, sensitivity and specificity too (see
    :meth:`SegmentationLearner.test_result`)."""

    matrix_metrics = ("dice", "dice_sample")
    loss_targets = ("class_indices", "label_maps")
    class_distributions = True
    label_maps = True

    @property
    def foreground(self) -> tuple[str, ...]:
        return self.class_names[1:]

    def build_loss(self, train: TrainConfig, train_sites: Sequence[SiteConfig] = ()) -> nn.Module:
        if self.ignore_index is not None and train.loss.kwargs.get("ignore_index") != self.ignore_index:
            raise ValueError(
                f"the dataset marks pixels to ignore with label {self.ignore_index}: set "
                f"common.train.loss.kwargs.ignore_index: {self.ignore_index} so that the loss skips them too"
            )
        return super().build_loss(train, train_sites)

    def learner(
        self,
        model: nn.Module,
        loss: nn.Module,
        train: TrainConfig,
        *,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> SegmentationLearner:
        return SegmentationLearner(
            model,
            loss,
            train=train,
            class_names=self.class_names,
            test_site_names=test_site_names,
            ignore_index=self.ignore_index,
            extra_losses=extra_losses,
        )

    def prediction_output(self, folder: Path, *, save_volumes: bool = False) -> PredictionOutput:
        metrics = [f"{m}_{c}" for m in SAMPLE_METRICS for c in (*self.foreground, "mean")]
        return PredictionOutput(
            folder,
            ["model", "site", "image_id", *metrics],
            ["model", "site", "n"] + [f"{m}_{s}" for m in metrics for s in SUMMARY_STATISTICS],
            save_volumes,
        )

    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """Per image, at its native resolution: Dice, HD95, average surface distance, IoU,
        sensitivity and specificity of each foreground class and their mean; their means over
        the images with 95% confidence intervals; an overlay grid
        (``overlays/<model>/<site>.png``) and the overlays of the best and the worst image by
        mean Dice (``overlays/<model>/<site>/{best,worst}_<image id>.png``); optionally NIfTI
        files (volumes: each prediction on its source file's grid, see :func:`save_nifti`)."""
        train = self.config.site_runs[0].train
        learner = self.learner(model.solver_for(site.task_name), self.build_loss(train), train)
        dataset = self.dataset([site], "test")
        data = loader(dataset, batch_size=train.batch_size, num_workers=self.config.num_workers, shuffle=False)
        batches = trainer.predict(learner, dataloaders=data)
        ids, scores = score_samples(batches, self.class_names, self.ignore_index)
        columns = [column for name in SAMPLE_METRICS for column in (*scores[name].T, scores[name].mean(1))]
        for index, image_id in enumerate(ids):
            output.sample_rows.append([model.name, site.task_name, image_id, *(column[index] for column in columns)])
        output.summary_rows.append(
            [model.name, site.task_name, len(ids), *(value for column in columns for value in summary_statistics(column))]
        )
        overlays = output.folder / "overlays" / safe_name(model.name)
        plot_overlays(batches, self.class_names, overlays / f"{safe_name(site.task_name)}.png")
        ranked = sorted(zip(np.round(scores["dice"].mean(1), 6), ids))  # as samples.csv's dice_mean, ties by id
        for kind, (_, image_id) in (("worst", ranked[0]), ("best", ranked[-1])):
            plot_overlays(batches, self.class_names, overlays / safe_name(site.task_name) / f"{kind}_{safe_name(image_id)}.png", [image_id])
        if output.save_volumes:
            on_source_grid = dataset.on_source_grid if isinstance(dataset, VolumeDataset) else None
            save_nifti(batches, output.folder / "nifti" / safe_name(model.name) / safe_name(site.task_name), on_source_grid)
        log.info("%s on %s: mean sample Dice %.4f", model.name, site.task_name, scores["dice"].mean())
