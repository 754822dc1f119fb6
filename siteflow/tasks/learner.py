"""The LightningModule that trains a segmentation model at one site and tests it on all sites.

Strategies reuse this one training step everywhere; strategy-specific terms (FedProx's
proximal term, for example) are added as ``extra_losses`` callables, not as copies of the
step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from siteflow.config import Component, TrainConfig
from siteflow.kernels import predict_labels
from siteflow.metrics import PooledDice, SampleDice

Batch = dict  # {"image": (N, C_in, *spatial) float, "label": (N, *spatial) int64, "id": list[str]}
ExtraLoss = Callable[["SegmentationLearner"], torch.Tensor]


def build_optimizer(spec: Component, parameters) -> torch.optim.Optimizer:
    """``torch.optim.<name>(parameters, **kwargs)``."""
    return getattr(torch.optim, spec.name)(parameters, **spec.kwargs)


def configure_optimization(train: TrainConfig, parameters):
    """Lightning's ``configure_optimizers`` value for the configured optimizer and scheduler."""
    optimizer = build_optimizer(train.optimizer, parameters)
    if train.scheduler is None:
        return optimizer
    scheduler = getattr(torch.optim.lr_scheduler, train.scheduler.name)(optimizer, **train.scheduler.kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class SegmentationLearner(pl.LightningModule):
    """Model + loss + Dice metrics, trained by a Lightning ``Trainer``.

    Args:
        model: maps images (N, C_in, *spatial) to logits (N, C, *spatial).
        loss: maps (logits, labels) to a scalar.
        train: optimizer, scheduler and logging settings.
        class_names: one name per class, background first.
        test_site_names: the name of each test dataloader, in order, for ``trainer.test``.
        ignore_index: label value that losses and metrics skip, if any.
        extra_losses: callables added to the loss of every training step.
    """

    matrix_metrics = ("dice", "dice_sample")

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        class_names: Sequence[str],
        test_site_names: Sequence[str] = (),
        ignore_index: int | None = None,
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.train_config = train
        self.class_names = tuple(class_names)
        self.test_site_names = tuple(test_site_names)
        self.extra_losses = list(extra_losses)
        self.ignore_index = ignore_index
        num_classes = len(class_names)
        self.val_dice = PooledDice(num_classes, ignore_index=ignore_index)
        self.test_pooled = nn.ModuleList(
            PooledDice(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )
        self.test_sample = nn.ModuleList(
            SampleDice(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )
        self.test_results: dict[str, dict[str, float]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *spatial) -> logits (N, C, *spatial)."""
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        for term in self.extra_losses:
            loss = loss + term(self)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["label"]), prog_bar=True, batch_size=len(logits))
        self.val_dice.update(logits, batch["label"])
        self.log("val/dice", self.val_dice, prog_bar=True, batch_size=len(logits))

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["image"])
        self.test_pooled[dataloader_idx].update(logits, batch["label"])
        self.test_sample[dataloader_idx].update(logits, batch["label"])

    def on_test_epoch_end(self) -> None:
        foreground = self.class_names[1:]
        self.test_results = {}
        for site, pooled_metric, sample_metric in zip(self.test_site_names, self.test_pooled, self.test_sample):
            pooled = pooled_metric.compute().reshape(-1)  # torchmetrics squeezes one class to 0-d
            sample = sample_metric.compute().reshape(-1)
            result = {"dice": pooled.mean().item(), "dice_sample": sample.mean().item()}
            result.update({f"dice_{name}": value.item() for name, value in zip(foreground, pooled)})
            self.test_results[site] = result
            pooled_metric.reset()
            sample_metric.reset()
            for key, value in result.items():
                self.log(f"test/{site}/{key}", value, add_dataloader_idx=False)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """The batch with ``"pred"``: predicted class ids (N, *spatial), all on the CPU."""
        pred = predict_labels(self(batch["image"]), len(self.class_names))
        return {"image": batch["image"].cpu(), "label": batch["label"].cpu(), "pred": pred.cpu(), "id": batch["id"]}

    def configure_optimizers(self):
        return configure_optimization(self.train_config, self.parameters())
