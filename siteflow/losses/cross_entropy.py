"""Class-weighted cross-entropy loss module."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siteflow.core.registry import LOSSES
from siteflow.kernels.reference import check_labels, check_logits
from siteflow.losses.class_balance import ClassWeighting, CountWeighted


def weights_buffer(class_weights: list[float] | str | None) -> Tensor | None:
    """The float32 (K,) tensor of explicit ``class_weights`` (None for none or a scheme);
    ValueError unless they are non-negative numbers."""
    if class_weights is None or isinstance(class_weights, str):
        return None
    weights = torch.tensor(class_weights, dtype=torch.float32)
    if weights.dim() != 1 or weights.numel() == 0 or bool((weights < 0).any()):
        raise ValueError(f"class_weights must be a non-empty list of non-negative numbers, got {class_weights}")
    return weights


def class_logits(logits: Tensor, labels: Tensor, ignore_index: int | None) -> Tensor:
    """``logits`` (N, C, *spatial), or (N, C) for one class per image, checked against
    ``labels`` (N, *spatial) and made two-class ``(0, x)`` when single-channel (a sigmoid
    output); half precision is evaluated in float32."""
    if logits.dim() != 2:
        check_logits(logits)
    elif not logits.is_floating_point():
        raise TypeError(f"logits must be floating, got {logits.dtype}")
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], 1)
    check_labels(labels, logits.shape[:1] + logits.shape[2:], logits.shape[1], ignore_index)
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


@LOSSES.register("ce")
class CrossEntropyLoss(CountWeighted, nn.Module):
    """Cross-entropy per pixel (logits (N, C, *spatial)) or per image (logits (N, C)),
    optionally class-weighted and label-smoothed, averaged over the counted pixels (images).

    With weights ``w`` the loss is ``sum(w[y] * -log p[y]) / sum(w[y])`` over pixels whose label is
    not ``ignore_index`` (the weighted mean of :func:`torch.nn.functional.cross_entropy`).
    Single-channel logits ``x`` are a sigmoid output: they are scored as the two-class logits
    ``(0, x)``, which makes the loss the binary cross-entropy and ``class_weights`` a pair
    (background, foreground). Half-precision logits are evaluated in float32.

    Args:
        class_weights: one non-negative weight per class; ``balanced`` or ``effective`` to
            have the task weigh the classes by their training counts (image-level
            classification; see :func:`~siteflow.losses.class_balance.class_balanced_weights`);
            None for equal weights. Kept in a (non-persistent) buffer so that it follows the
            module's device.
        ignore_index: label value of pixels to leave out.
        label_smoothing: in [0, 1): the target puts ``1 - label_smoothing`` on the true class
            and spreads ``label_smoothing`` evenly over all classes (torch's definition).
        beta: the ``effective`` scheme's beta, in [0, 1).
    """

    targets: ClassVar[str] = "class_indices"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    class_weights: Tensor | None

    def __init__(
        self,
        class_weights: list[float] | ClassWeighting | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        beta: float = 0.999,
    ) -> None:
        super().__init__()
        if isinstance(class_weights, str) and class_weights not in ("balanced", "effective"):
            raise ValueError(f"class_weights must be a list of numbers, 'balanced' or 'effective', not {class_weights!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.weighting = class_weights if isinstance(class_weights, str) else None
        self.beta = beta
        self.register_buffer("class_weights", weights_buffer(class_weights), persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of logits ``(N, C, *spatial)`` against labels ``(N, *spatial)``; a scalar."""
        if self.weighting is not None:
            raise ValueError(f"class_weights: {self.weighting!r} needs the training class counts, which the task fills in")
        logits = class_logits(logits, labels, self.ignore_index)
        classes = logits.shape[1]
        weight = None
        if self.class_weights is not None:
            if self.class_weights.numel() != classes:
                raise ValueError(f"class_weights has {self.class_weights.numel()} entries for {classes} classes")
            weight = self.class_weights.to(logits.dtype)
        ignore_index = -100 if self.ignore_index is None else self.ignore_index  # -100: torch's "none"
        return F.cross_entropy(logits, labels.long(), weight=weight, ignore_index=ignore_index, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        weights = self.weighting if self.class_weights is None else self.class_weights.tolist()
        return f"class_weights={weights}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"
