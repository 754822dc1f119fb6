"""Segmentation: integer label maps, Dice and HD95."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
from torch import nn

from siteflow.config import SiteConfig, TrainConfig
from siteflow.core.atomic import safe_name
from siteflow.core.registry import TASKS
from siteflow.datasets.pooling import loader
from siteflow.metrics import mean_confidence_interval
from siteflow.tasks.base import ExtraLoss, ModelToTest, PredictionOutput, Task
from siteflow.tasks.segmentation.learner import SegmentationLearner
from siteflow.tasks.segmentation.prediction import plot_overlays, save_nifti, score_samples

log = logging.getLogger(__name__)


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """Per-pixel classes; the site matrix holds pooled and per-sample mean foreground Dice."""

    matrix_metrics = ("dice", "dice_sample")

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
        metrics = [f"dice_{c}" for c in self.foreground] + ["dice_mean"]
        metrics += [f"hd95_{c}" for c in self.foreground] + ["hd95_mean"]
        return PredictionOutput(
            folder,
            ["model", "site", "image_id", *metrics],
            ["model", "site", "n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")],
            save_volumes,
        )

    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """Dice and HD95 per image, their means with 95% confidence intervals, an overlay
        grid (``overlays/<model>/<site>.png``) and optionally NIfTI files."""
        train = self.config.tasks[0].train
        learner = self.learner(model.solver_for(site.task_name), self.build_loss(train), train)
        dataset = self.dataset([site], "test")
        batches = trainer.predict(
            learner, dataloaders=loader(dataset, batch_size=train.batch_size, num_workers=self.config.num_workers, shuffle=False)
        )
        ids, dice, distance = score_samples(batches, self.class_names, self.ignore_index)
        for image_id, dice_row, distance_row in zip(ids, dice, distance):
            output.sample_rows.append(
                [model.name, site.task_name, image_id, *dice_row, dice_row.mean(), *distance_row, distance_row.mean()]
            )
        columns = [*dice.T, dice.mean(1), *distance.T, distance.mean(1)]
        output.summary_rows.append(
            [model.name, site.task_name, len(ids), *(f for c in columns for f in mean_confidence_interval(c))]
        )
        plot_overlays(batches, self.class_names, output.folder / "overlays" / safe_name(model.name) / f"{safe_name(site.task_name)}.png")
        if output.save_volumes:
            save_nifti(batches, output.folder / "nifti" / safe_name(model.name) / safe_name(site.task_name))
        log.info("%s on %s: mean sample Dice %.4f", model.name, site.task_name, dice.mean())
