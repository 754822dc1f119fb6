"""Soft Dice loss module."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from siteflow.kernels import dice_loss
from siteflow.core.registry import LOSSES


@LOSSES.register("dice")
class SoftDiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean soft Dice``; see :func:`siteflow.kernels.dice_loss`.

    Args:
        include_background: keep the background class 0 in the mean.
        batch_dice: pool the sums over the batch instead of averaging per-sample Dice.
        smooth: added to the numerator and the denominator of every Dice.
        ignore_index: label value of pixels to leave out.
    """

    targets: ClassVar[str] = "label_maps"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    def __init__(
        self,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be non-negative, got {smooth}")
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of logits ``(N, C, *spatial)`` against labels ``(N, *spatial)``; a scalar."""
        return dice_loss(
            logits,
            labels,
            include_background=self.include_background,
            batch_dice=self.batch_dice,
            smooth=self.smooth,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return (
            f"include_background={self.include_background}, batch_dice={self.batch_dice}, smooth={self.smooth}, "
            f"ignore_index={self.ignore_index}"
        )
