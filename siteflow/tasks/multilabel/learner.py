"""The multi-label learner: masked BCE, per-label AUROC per test site."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from siteflow.config import TrainConfig
from siteflow.metrics import MultiLabelAUROC
from siteflow.tasks.base import Batch, ExtraLoss, Learner


class MultiLabelLearner(Learner):
    """Classifier + masked BCE + per-label AUROC.

    Batches: ``{"image": (N, C, H, W), "labels": (N, L) float, "mask": (N, L) float, "id": list[str]}``.

    Args:
        model: images (N, C, H, W) -> logits (N, L) over the union of labels.
        loss: (logits, targets, mask) -> scalar (``MaskedBCEWithLogitsLoss``).
        train, test_site_names, extra_losses: as for :class:`~siteflow.tasks.base.Learner`.
        label_names: the union of labels, in the model's output order.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        label_names: Sequence[str],
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)
        self.label_names = tuple(label_names)
        self.val_auroc = MultiLabelAUROC()
        self.test_auroc = nn.ModuleList(MultiLabelAUROC() for _ in self.test_site_names)

    def loss_of(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(outputs, batch["labels"], batch["mask"])

    def update_validation(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.val_auroc.update(outputs.sigmoid(), batch["labels"], batch["mask"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/auroc", nanmean(self.val_auroc.compute()), prog_bar=True)
        self.val_auroc.reset()

    def update_test(self, site_index: int, outputs: torch.Tensor, batch: Batch) -> None:
        self.test_auroc[site_index].update(outputs.sigmoid(), batch["labels"], batch["mask"])

    def test_result(self, site_index: int) -> dict[str, float]:
        metric = self.test_auroc[site_index]
        per_label = metric.compute()
        metric.reset()
        result = {"auroc": nanmean(per_label)}
        result.update({f"auroc_{name}": value.item() for name, value in zip(self.label_names, per_label) if value == value})
        return result

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """The batch with ``"scores"``: sigmoid probabilities (N, L), all on the CPU."""
        return {"scores": self(batch["image"]).sigmoid().cpu(), "labels": batch["labels"].cpu(),
                "mask": batch["mask"].cpu(), "id": batch["id"]}


def nanmean(values: torch.Tensor) -> float:
    """Mean over the finite values (labels a site can score), NaN if there are none."""
    finite = values[torch.isfinite(values)]
    return finite.mean().item() if finite.numel() else float("nan")
