"""Per-class confusion counts of a hard segmentation, and the overlap scores made from them:
Dice, IoU (Jaccard), sensitivity and specificity."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from siteflow.kernels import confusion


class Confusion(NamedTuple):
    """True positive, false positive, false negative and true negative pixel counts, each
    int64 of one shape (``(N, C)`` per sample and class, or ``(C,)`` pooled)."""

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor


def confusion_counts(
    logits_or_pred: Tensor, labels: Tensor, num_classes: int, *, ignore_index: int | None = None
) -> Confusion:
    """Per-sample, per-class TP, FP, FN and TN of a prediction against labels, over the counted
    pixels: a pixel labelled ``ignore_index`` counts nowhere (DRIVE's field-of-view mask).

    TP, FP and FN come from :func:`siteflow.kernels.confusion`; TN is what is left of the
    sample's counted pixels, ``counted - TP - FP - FN``.

    Args:
        logits_or_pred: floating logits ``(N, C, *spatial)`` or an int64/uint8 prediction
            ``(N, *spatial)`` (see :func:`siteflow.kernels.predict_labels`).
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes, at least 2.
        ignore_index: label value of pixels that count nowhere.

    Returns:
        :class:`Confusion` of int64 ``(N, num_classes)`` counts.
    """
    tp, fp, fn = confusion(logits_or_pred, labels, num_classes, ignore_index=ignore_index)
    flat = labels.flatten(1)
    counted = flat.shape[1] if ignore_index is None else (flat != ignore_index).sum(1, keepdim=True)
    return Confusion(tp, fp, fn, counted - tp - fp - fn)


def dice_from_confusion(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """``2 TP / (2 TP + FP + FN)`` elementwise, 1 where the class is absent from prediction and truth.

    Args:
        tp, fp, fn: integer counts of one shape.

    Returns:
        Dice in the default float dtype (evaluated in float64), same shape as the counts.
    """
    numerator = 2 * tp.double()
    return _ratio(numerator, numerator + fp.double() + fn.double(), 1.0)


def overlap_scores(counts: Confusion) -> dict[str, Tensor]:
    """The overlap scores of confusion counts, elementwise, in the default float dtype
    (evaluated in float64), each of the counts' shape:

    - ``dice``: ``2 TP / (2 TP + FP + FN)``; 1 where the class is absent from prediction and truth;
    - ``iou`` (Jaccard): ``TP / (TP + FP + FN)``; 1 there too (``iou = dice / (2 - dice)``);
    - ``sensitivity`` (recall): ``TP / (TP + FN)``; NaN where the truth has no such pixel;
    - ``specificity``: ``TN / (TN + FP)``; NaN where every counted pixel is of the class.
    """
    tp, fp, fn, tn = (count.double() for count in counts)
    return {
        "dice": dice_from_confusion(*counts[:3]),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "sensitivity": _ratio(tp, tp + fn, torch.nan),
        "specificity": _ratio(tn, tn + fp, torch.nan),
    }


def _ratio(numerator: Tensor, denominator: Tensor, undefined: float) -> Tensor:
    """``numerator / denominator`` (float64), ``undefined`` where the denominator is 0, in the
    default float dtype."""
    ratio = torch.where(denominator > 0, numerator / denominator.clamp_min(1), undefined)
    return ratio.to(torch.get_default_dtype())
