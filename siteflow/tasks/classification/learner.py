"""The multi-class learner: softmax outputs, cross-entropy-like losses, the scores of
:mod:`siteflow.metrics.multiclass` per test site."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from siteflow.config import TrainConfig
from siteflow.metrics.multiclass import MulticlassScores
from siteflow.tasks.base import Batch, ExtraLoss, Learner


class ClassificationLearner(Learner):
    """Classifier + loss + multi-class scores.

    Batches: ``{"image": (N, C, *spatial) float, "label": (N,) int64, "id": list[str]}``.

    Args:
        model: images -> logits (N, K).
        loss: (logits (N, K), labels (N,)) -> scalar.
        train, test_site_names, extra_losses: as for :class:`~siteflow.tasks.base.Learner`.
        class_names: the K classes, in the model's output order.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        class_names: Sequence[str],
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)
        self.class_names = tuple(class_names)
        self.val_scores = MulticlassScores(self.class_names)
        self.test_scores = nn.ModuleList(MulticlassScores(self.class_names) for _ in self.test_site_names)

    def loss_of(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(outputs, batch["label"])

    def update_validation(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.val_scores.update(outputs.float().softmax(1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        if self.val_scores.update_count:
            scores = self.val_scores.compute()
            self.log("val/balanced_accuracy", scores["balanced_accuracy"], prog_bar=True)
            self.log("val/accuracy", scores["accuracy"])
        self.val_scores.reset()

    def update_test(self, site_index: int, outputs: torch.Tensor, batch: Batch) -> None:
        self.test_scores[site_index].update(outputs.float().softmax(1), batch["label"])

    def test_result(self, site_index: int) -> dict[str, float]:
        """Accuracy, balanced accuracy, macro F1, macro and per-class AUROC, quadratic kappa,
        per-class recall and the confusion counts of the site's test split (see
        :func:`~siteflow.metrics.multiclass.multiclass_scores`)."""
        metric = self.test_scores[site_index]
        result = metric.compute()
        metric.reset()
        return result

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """Class probabilities (N, K) and true classes (N,), on the CPU, with the ids."""
        return {"probabilities": self(batch["image"]).float().softmax(1).cpu(), "label": batch["label"].cpu(), "id": batch["id"]}
