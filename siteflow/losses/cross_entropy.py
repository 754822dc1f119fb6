"""Class-weighted cross-entropy loss module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siteflow.kernels.reference import check_labels, check_logits
from siteflow.core.registry import LOSSES


@LOSSES.register("ce")
class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, optionally class-weighted, averaged over the counted pixels.

    With weights ``w`` the loss is ``sum(w[y] * -log p[y]) / sum(w[y])`` over pixels whose label is
    not ``ignore_index`` (the weighted mean of :func:`torch.nn.functional.cross_entropy`).
    Single-channel logits ``x`` are a sigmoid output: they are scored as the two-class logits
    ``(0, x)``, which makes the loss the binary cross-entropy and ``class_weights`` a pair
    (background, foreground). Half-precision logits are evaluated in float32.

    Args:
        class_weights: one non-negative weight per class, or None for equal weights. Kept in a
            (non-persistent) buffer so that it follows the module's device.
        ignore_index: label value of pixels to leave out.
    """

    class_weights: Tensor | None

    def __init__(self, class_weights: list[float] | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        weights = None
        if class_weights is not None:
            weights = torch.tensor(class_weights, dtype=torch.float32)
            if weights.dim() != 1 or weights.numel() == 0 or bool((weights < 0).any()):
                raise ValueError(f"class_weights must be a non-empty list of non-negative numbers, got {class_weights}")
        self.register_buffer("class_weights", weights, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of logits ``(N, C, *spatial)`` against labels ``(N, *spatial)``; a scalar."""
        check_logits(logits)
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], 1)
        classes = logits.shape[1]
        check_labels(labels, logits.shape[:1] + logits.shape[2:], classes, self.ignore_index)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        weight = None
        if self.class_weights is not None:
            if self.class_weights.numel() != classes:
                raise ValueError(f"class_weights has {self.class_weights.numel()} entries for {classes} classes")
            weight = self.class_weights.to(logits.dtype)
        ignore_index = -100 if self.ignore_index is None else self.ignore_index  # -100: torch's "none"
        return F.cross_entropy(logits, labels.long(), weight=weight, ignore_index=ignore_index)

    def extra_repr(self) -> str:
        weights = None if self.class_weights is None else self.class_weights.tolist()
        return f"class_weights={weights}, ignore_index={self.ignore_index}"
