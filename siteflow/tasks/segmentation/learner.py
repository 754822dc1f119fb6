"""The segmentation learner: Dice on validation, pooled and per-sample Dice per test site."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from siteflow.config import TrainConfig
from siteflow.kernels import predict_labels
from siteflow.metrics import PooledDice, SampleDice
from siteflow.tasks.base import Batch, ExtraLoss, Learner


class SegmentationLearner(Learner):
    """Segmentation model + loss + Dice metrics.

    Batches: ``{"image": (N, C_in, *spatial) float, "label": (N, *spatial) int64, "id": list[str]}``.

    Args:
        model: images (N, C_in, *spatial) -> logits (N, C, *spatial).
        loss: (logits, labels) -> scalar.
        train, test_site_names, extra_losses: as for :class:`~siteflow.tasks.base.Learner`.
        class_names: one name per class, background first.
        ignore_index: label value that losses and metrics skip, if any.
    """

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
        super().__init__(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        num_classes = len(class_names)
        self.val_dice = PooledDice(num_classes, ignore_index=ignore_index)
        self.test_pooled = nn.ModuleList(
            PooledDice(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )
        self.test_sample = nn.ModuleList(
            SampleDice(num_classes, ignore_index=ignore_index, average="none") for _ in self.test_site_names
        )

    def loss_of(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(outputs, batch["label"])

    def update_validation(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.val_dice.update(outputs, batch["label"])
        self.log("val/dice", self.val_dice, prog_bar=True, batch_size=len(outputs))

    def update_test(self, site_index: int, outputs: torch.Tensor, batch: Batch) -> None:
        self.test_pooled[site_index].update(outputs, batch["label"])
        self.test_sample[site_index].update(outputs, batch["label"])

    def test_result(self, site_index: int) -> dict[str, float]:
        pooled_metric, sample_metric = self.test_pooled[site_index], self.test_sample[site_index]
        pooled = pooled_metric.compute().reshape(-1)  # torchmetrics squeezes one class to 0-d
        sample = sample_metric.compute().reshape(-1)
        pooled_metric.reset()
        sample_metric.reset()
        result = {"dice": pooled.mean().item(), "dice_sample": sample.mean().item()}
        result.update({f"dice_{name}": value.item() for name, value in zip(self.class_names[1:], pooled)})
        return result

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """The batch with ``"pred"``: predicted class ids (N, *spatial), all on the CPU."""
        pred = predict_labels(self(batch["image"]), len(self.class_names))
        return {"image": batch["image"].cpu(), "label": batch["label"].cpu(), "pred": pred.cpu(), "id": batch["id"]}
