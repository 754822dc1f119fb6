"""Exponential-logarithmic Dice + cross-entropy loss of the Relay Learning reference."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from siteflow.losses.cross_entropy import CrossEntropyLoss
from siteflow.losses.dice import SoftDiceLoss
from siteflow.core.registry import LOSSES


@LOSSES.register("explog")
class ExpLogLoss(nn.Module):
    """``lambda_dice * (-ln max(Dice, 1e-6)) ** gamma + lambda_ce * CE``.

    ``Dice`` is the mean soft Dice, ``1 - dice_loss`` (see :class:`SoftDiceLoss`), and ``CE`` the
    class-weighted cross-entropy (see :class:`CrossEntropyLoss`). ``gamma < 1`` boosts the
    gradient of the Dice term as Dice approaches 1. At ``Dice == 1`` exactly the Dice term and
    its gradient are taken as 0 (the analytic gradient is infinite there).

    Args:
        gamma: exponent of the log-Dice term, positive.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        class_weights: per-class cross-entropy weights, or None.
        include_background: keep the background class 0 in the Dice mean (True, default); False averages
            the Dice over the foreground classes only (ignored for a one-channel sigmoid output).
        batch_dice: pool the Dice sums over the whole batch (one Dice per class) instead of
            averaging per-sample Dice (default False).
        smooth: added to the numerator and the denominator of every Dice, >= 0, so that a class
            absent from both the label and the prediction scores about 1 instead of 0/0.
        ignore_index: label value of pixels to leave out of both terms.
    """

    targets: ClassVar[str] = "label_maps"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    def __init__(
        self,
        gamma: float = 0.3,
        lambda_dice: float = 0.8,
        lambda_ce: float = 0.2,
        class_weights: list[float] | None = None,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.gamma = gamma
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.dice = SoftDiceLoss(include_background=include_background, batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index)
        self.ce = CrossEntropyLoss(class_weights=class_weights, ignore_index=ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of logits ``(N, C, *spatial)`` against labels ``(N, *spatial)``; a scalar."""
        dice = 1 - self.dice(logits, labels)
        neg_log_dice = -torch.log(dice.clamp_min(1e-6))
        # The clamp keeps the pow's gradient finite where torch.where discards that branch.
        positive = neg_log_dice > 0
        dice_term = torch.where(positive, neg_log_dice.clamp_min(1e-30).pow(self.gamma), 0.0)
        return self.lambda_dice * dice_term + self.lambda_ce * self.ce(logits, labels)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, lambda_dice={self.lambda_dice}, lambda_ce={self.lambda_ce}"
