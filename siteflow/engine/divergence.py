"""Training that diverges stops: a loss or a weight that becomes NaN or infinite ends the
site's stage with :class:`TrainingDiverged`, naming the site, the epoch and the step.

The stage's checkpoint (``last.ckpt``) is rewritten only at the end of an epoch that ended
finite, so it keeps the last finite weights to resume from (with a lower learning rate); the
stage writes no final weights nor hand-over file, since the exception leaves the step before.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from siteflow.core.finite import first_non_finite


class TrainingDiverged(RuntimeError):
    """A site's training produced a loss or weights that are not finite."""


class DivergenceGuard(pl.Callback):
    """Checks the training loss and every weight of the learner after each training batch.

    Args:
        site: the site (or sites) being trained, for the message.
        stage: the stage, for the message.
    """

    def __init__(self, site: str, stage: str) -> None:
        self.site = site
        self.stage = stage

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        where = f"site {self.site}, stage {self.stage}: training diverged at epoch {trainer.current_epoch}, step {trainer.global_step} (batch {batch_idx})"
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingDiverged(f"{where}: the loss is {loss.detach().float().mean().item()}; {self._advice()}")
        weights = pl_module.state_dict()
        flags = [torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()]
        if flags and bool(torch.stack(flags).all()):  # one reduction, one device sync
            return
        found = first_non_finite(dict(weights))
        if found is not None:
            name, count = found
            raise TrainingDiverged(f"{where}: weight {name!r} holds {count:,} values that are not finite; {self._advice()}")

    def _advice(self) -> str:
        return (
            "no final weights nor hand-over file are written; the stage's last.ckpt keeps the last epoch that ended "
            "finite (lower the learning rate, common.train.optimizer.kwargs.lr, or clip gradients, "
            "common.train.gradient_clip_val)"
        )
