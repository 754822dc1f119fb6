"""Hard overlap scores from confusion counts: pooled over a data set (Dice, IoU, sensitivity,
specificity), or per sample (Dice)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from siteflow.kernels import confusion
from siteflow.metrics.classes import Average, average_classes, check_average, reported_classes
from siteflow.metrics.confusion import Confusion, confusion_counts, dice_from_confusion, overlap_scores
from siteflow.metrics.per_sample import PerSampleMetric


class PooledOverlap(Metric):
    """Overlap scores of the pixel counts pooled over all samples (the "global" or "micro over
    samples" scores): Dice, IoU, sensitivity and specificity (see
    :func:`~siteflow.metrics.confusion.overlap_scores` for their definitions and the values of
    classes absent from prediction or truth).

    ``update`` adds the per-class TP/FP/FN/TN of a batch (see
    :func:`~siteflow.metrics.confusion.confusion_counts`); ``compute`` returns
    ``{"dice", "iou", "sensitivity", "specificity"}``, each the mean over the reported classes
    (``"macro"``: a scalar) or the vector ``(C_reported,)`` (``"none"``).

    Args:
        num_classes: number of classes, at least 2.
        include_background: report class 0 as well.
        ignore_index: label value of pixels that count nowhere.
        average: ``"macro"`` or ``"none"``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        include_background: bool = False,
        ignore_index: int | None = None,
        average: Average = "macro",
    ) -> None:
        super().__init__()
        check_average(average)
        self.classes = reported_classes(num_classes, include_background)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.average = average
        for name in Confusion._fields:
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds_or_logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits ``(N, C, *spatial)`` or a prediction ``(N, *spatial)``, labels ``(N, *spatial)``."""
        counts = confusion_counts(preds_or_logits, labels, self.num_classes, ignore_index=self.ignore_index)
        for name, count in zip(Confusion._fields, counts):
            setattr(self, name, getattr(self, name) + count.sum(0))

    def compute(self) -> dict[str, Tensor]:
        scores = overlap_scores(Confusion(self.tp, self.fp, self.fn, self.tn))
        return {name: average_classes(score[self.classes], self.average) for name, score in scores.items()}


class PooledDice(PooledOverlap):
    """The Dice of :class:`PooledOverlap` alone: ``2 TP / (2 TP + FP + FN)`` of the pixel
    counts pooled over all samples, per reported class, 1 for a class absent from both
    prediction and truth over the whole set; a scalar mean over the reported classes
    (``"macro"``), or the vector ``(C_reported,)`` (``"none"``)."""

    def compute(self) -> Tensor:
        return super().compute()["dice"]


class SampleDice(PerSampleMetric):
    """Dice per sample and class, averaged over samples.

    A class absent from both the prediction and the truth of a sample scores 1 for it; present
    in exactly one of them, 0. ``compute`` returns the mean over samples of the per-sample mean
    over reported classes (``"macro"``), or the per-class means over samples (``"none"``);
    ``per_sample()`` returns the ``(N, C_reported)`` table.

    Args:
        num_classes: number of classes, at least 2.
        include_background: report class 0 as well.
        ignore_index: label value of pixels that count nowhere.
        average: ``"macro"`` or ``"none"``.
    """

    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        include_background: bool = False,
        ignore_index: int | None = None,
        average: Average = "macro",
    ) -> None:
        super().__init__(num_classes, include_background, average)
        self.ignore_index = ignore_index

    def update(self, preds_or_logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits ``(N, C, *spatial)`` or a prediction ``(N, *spatial)``, labels ``(N, *spatial)``."""
        tp, fp, fn = confusion(preds_or_logits, labels, self.num_classes, ignore_index=self.ignore_index)
        self._append(dice_from_confusion(tp, fp, fn)[:, self.classes])
