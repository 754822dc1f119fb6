"""Sum of soft Dice loss and cross-entropy, as in nnU-Net."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from siteflow.losses.cross_entropy import CrossEntropyLoss
from siteflow.losses.dice import SoftDiceLoss
from siteflow.core.registry import LOSSES


@LOSSES.register("dice_ce")
class DiceCELoss(nn.Module):
    """``lambda_dice * dice_loss + lambda_ce * CE``.

    See :class:`SoftDiceLoss` and :class:`CrossEntropyLoss` for the two terms.

    Args:
        lambda_dice: weight of the soft Dice loss.
        lambda_ce: weight of the cross-entropy.
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
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        class_weights: list[float] | None = None,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth: float = 1.0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.dice = SoftDiceLoss(include_background=include_background, batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index)
        self.ce = CrossEntropyLoss(class_weights=class_weights, ignore_index=ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of logits ``(N, C, *spatial)`` against labels ``(N, *spatial)``; a scalar."""
        return self.lambda_dice * self.dice(logits, labels) + self.lambda_ce * self.ce(logits, labels)

    def extra_repr(self) -> str:
        return f"lambda_dice={self.lambda_dice}, lambda_ce={self.lambda_ce}"
