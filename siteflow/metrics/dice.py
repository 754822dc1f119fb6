"""Hard Dice scores from confusion counts: pooled over a data set, or per sample."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from siteflow.kernels import confusion
from siteflow.metrics.classes import Average, average_classes, check_average, reported_classes
from siteflow.metrics.per_sample import PerSampleMetric


def dice_from_confusion(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """``2 TP / (2 TP + FP + FN)`` elementwise, 1 where the class is absent from prediction and truth.

    Args:
        tp, fp, fn: integer counts of one shape.

    Returns:
        Dice in the default float dtype (evaluated in float64), same shape as the counts.
    """
    numerator = 2 * tp.double()
    denominator = numerator + fp.double() + fn.double()
    dice = torch.where(denominator > 0, numerator / denominator.clamp_min(1), 1.0)
    return dice.to(torch.get_default_dtype())


class PooledDice(Metric):
    """Dice of the pixel counts pooled over all samples (the "global" or "micro over samples" Dice).

    ``update`` adds the per-class TP/FP/FN of a batch (see :func:`siteflow.kernels.confusion`);
    ``compute`` returns ``2 TP / (2 TP + FP + FN)`` per reported class, 1 for a class absent from
    both prediction and truth over the whole set: a scalar mean over the reported classes
    (``"macro"``), or the vector ``(C_reported,)`` (``"none"``).

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
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds_or_logits: Tensor, labels: Tensor) -> None:
        """Add a batch: logits ``(N, C, *spatial)`` or a prediction ``(N, *spatial)``, labels ``(N, *spatial)``."""
        tp, fp, fn = confusion(preds_or_logits, labels, self.num_classes, ignore_index=self.ignore_index)
        self.tp += tp.sum(0)
        self.fp += fp.sum(0)
        self.fn += fn.sum(0)

    def compute(self) -> Tensor:
        dice = dice_from_confusion(self.tp, self.fp, self.fn)[self.classes]
        return average_classes(dice, self.average)


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
