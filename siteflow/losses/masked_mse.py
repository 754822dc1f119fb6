"""The masked autoencoder's loss: mean squared error over the masked patches only."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from siteflow.core.registry import LOSSES


def patch_errors(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of every patch: pred, target (N, L, P) float -> (N, L)."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


@LOSSES.register("masked_mse")
class MaskedPatchMSELoss(nn.Module):
    """MAE's loss: the squared error averaged over each patch's values, then over the masked
    patches of the batch (the visible ones do not count).

    ``(pred (N, L, P), target (N, L, P), mask (N, L) float, 1 = masked) -> scalar``.
    """

    targets: ClassVar[str] = "patches"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return (patch_errors(pred, target) * mask).sum() / mask.sum().clamp_min(1)


def image_errors(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """The loss of each image over its own masked patches: (N, L, P), (N, L, P), (N, L) -> (N,)."""
    return (patch_errors(pred, target) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
