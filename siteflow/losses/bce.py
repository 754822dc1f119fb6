"""Multi-label binary cross-entropy that skips unknown labels."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siteflow.core.registry import LOSSES


@LOSSES.register("bce")
class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy over the known labels of each sample.

    ``loss = sum(mask * bce(logits, targets; pos_weight)) / sum(mask)``: labels a site does
    not annotate (or marks uncertain, under the "ignore" policy) have ``mask == 0`` and add
    nothing. ``pos_weight`` up-weights the positives of each label; ``"auto"`` lets siteflow
    set it to ``(N - P) / P`` from the site's training split.

    forward: logits (N, L), targets (N, L) in {0, 1}, mask (N, L) in {0, 1} or None -> scalar.

    Args:
        pos_weight: factor on the loss of each label's positives, one number per label in the
            study's label order; ``"auto"`` (default) sets each to ``(N - P) / P`` over the
            known labels of the pooled training sites (1 for a label without positives);
            null weighs positives and negatives alike.
    """

    targets: ClassVar[str] = "label_vectors"
    """What the logits are compared with (see :attr:`siteflow.tasks.base.Task.loss_targets`)."""

    pos_weight: Tensor | None

    auto_pos_weight: bool
    """Whether ``pos_weight`` is ``"auto"``: the task builds the loss again with the weights
    counted over the training sites (see :meth:`siteflow.tasks.base.Task.build_loss`)."""

    def __init__(self, pos_weight: list[float] | Literal["auto"] | None = "auto") -> None:
        super().__init__()
        if isinstance(pos_weight, str) and pos_weight != "auto":
            raise ValueError(f"pos_weight must be a list of numbers, 'auto' or null, got {pos_weight!r}")
        self.auto_pos_weight = pos_weight == "auto"
        weights = torch.tensor(pos_weight, dtype=torch.float32) if isinstance(pos_weight, list) else None
        self.register_buffer("pos_weight", weights, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        if logits.shape != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
        if self.pos_weight is not None and self.pos_weight.numel() != logits.shape[1]:
            raise ValueError(f"pos_weight has {self.pos_weight.numel()} values for {logits.shape[1]} labels")
        losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=self.pos_weight, reduction="none")
        if mask is None:
            return losses.mean()
        mask = mask.float()
        return (losses * mask).sum() / mask.sum().clamp_min(1.0)
