"""The focal loss over classes (one class per image, or per pixel)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siteflow.core.registry import LOSSES
from siteflow.losses.class_balance import ClassWeighting, CountWeighted
from siteflow.losses.cross_entropy import class_logits, weights_buffer


@LOSSES.register("focal")
class FocalLoss(CountWeighted, nn.Module):
    """Focal loss (Lin et al., ICCV 2017): ``-w[y] * (1 - p_y) ** gamma * log p_y`` per image
    (pixel), divided by ``sum(w[y])`` over the counted ones (the mean when unweighted), so
    that ``gamma = 0`` gives :class:`~siteflow.losses.cross_entropy.CrossEntropyLoss` exactly.

    forward: logits (N, C) or (N, C, *spatial) float, labels (N,) or (N, *spatial) int64 -> scalar.

    Args:
        gamma: focusing exponent, non-negative; larger values down-weight well-classified
            samples more.
        class_weights: as for ``ce``: a list, ``balanced``, ``effective`` or None.
        ignore_index: label value to leave out.
        beta: the ``effective`` scheme's beta, in [0, 1).
    """

    targets: ClassVar[str] = "class_indices"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    class_weights: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: list[float] | ClassWeighting | None = None,
        ignore_index: int | None = None,
        beta: float = 0.999,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        if isinstance(class_weights, str) and class_weights not in ("balanced", "effective"):
            raise ValueError(f"class_weights must be a list of numbers, 'balanced' or 'effective', not {class_weights!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.gamma = gamma
        self.weighting = class_weights if isinstance(class_weights, str) else None
        self.beta = beta
        self.register_buffer("class_weights", weights_buffer(class_weights), persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.weighting is not None:
            raise ValueError(f"class_weights: {self.weighting!r} needs the training class counts, which the task fills in")
        logits = class_logits(logits, labels, self.ignore_index)
        labels = labels.long()
        counted = labels != (-100 if self.ignore_index is None else self.ignore_index)
        safe = torch.where(counted, labels, torch.zeros_like(labels))
        log_p = F.log_softmax(logits, 1).gather(1, safe.unsqueeze(1)).squeeze(1)
        weight = torch.ones_like(log_p)
        if self.class_weights is not None:
            if self.class_weights.numel() != logits.shape[1]:
                raise ValueError(f"class_weights has {self.class_weights.numel()} entries for {logits.shape[1]} classes")
            weight = self.class_weights.to(logits.dtype)[safe]
        weight = weight * counted
        focal = -((1 - log_p.exp()) ** self.gamma) * log_p
        return (weight * focal).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)

    def extra_repr(self) -> str:
        weights = self.weighting if self.class_weights is None else self.class_weights.tolist()
        return f"gamma={self.gamma}, class_weights={weights}, ignore_index={self.ignore_index}"
