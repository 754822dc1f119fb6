"""Multi-label classification metrics: AUROC per label over the known labels, Youden thresholds."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc, binary_roc
from torchmetrics.utilities import dim_zero_cat


def masked_auroc(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """AUROC of every label over the samples where it is known.

    Args:
        scores: (N, L) scores (probabilities or logits).
        targets: (N, L) in {0, 1}.
        mask: (N, L), 1 where the label is known; None: all known.

    Returns:
        (L,) float64; NaN for a label without both a known positive and a known negative.
    """
    known = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    values = []
    for label in range(scores.shape[1]):
        rows = known[:, label]
        truth = targets[rows, label].long()
        if truth.numel() == 0 or truth.min() == truth.max():
            values.append(float("nan"))
        else:
            values.append(binary_auroc(scores[rows, label].double(), truth).item())
    return torch.tensor(values, dtype=torch.float64)


def youden_thresholds(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per label, the score threshold maximising Youden's J = sensitivity + specificity - 1.

    Choose thresholds on validation data, never on the test split. Returns (L,) float64; 0.5
    for a label without both classes.
    """
    known = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    thresholds = []
    for label in range(scores.shape[1]):
        rows = known[:, label]
        truth = targets[rows, label].long()
        if truth.numel() == 0 or truth.min() == truth.max():
            thresholds.append(0.5)
            continue
        fpr, tpr, cut = binary_roc(scores[rows, label].double(), truth)
        thresholds.append(min(cut[torch.argmax(tpr - fpr)].item(), 1.0))
    return torch.tensor(thresholds, dtype=torch.float64)


def sensitivity_specificity(scores: Tensor, targets: Tensor, mask: Tensor | None, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Per label, (sensitivity, specificity) of ``score >= threshold`` over the known entries."""
    known = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    predicted = scores.double() >= thresholds.to(scores.device)
    positive = targets.bool()
    true_positive = (predicted & positive & known).sum(0).double()
    true_negative = (~predicted & ~positive & known).sum(0).double()
    sensitivity = true_positive / (positive & known).sum(0).double()
    specificity = true_negative / (~positive & known).sum(0).double()
    return sensitivity, specificity


class MultiLabelAUROC(Metric):
    """AUROC per label over the known labels (see :func:`masked_auroc`), accumulated over batches.

    ``update(scores (N, L), targets (N, L), mask (N, L) | None)``; ``compute`` -> (L,).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("scores", "targets", "masks"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> None:
        self.scores.append(scores.detach().float())
        self.targets.append(targets.detach().float())
        self.masks.append(torch.ones_like(targets, dtype=torch.float32) if mask is None else mask.detach().float())

    def compute(self) -> Tensor:
        return masked_auroc(dim_zero_cat(self.scores), dim_zero_cat(self.targets), dim_zero_cat(self.masks))
