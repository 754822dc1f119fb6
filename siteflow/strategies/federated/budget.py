"""A site's local work per round counted in optimiser steps instead of epochs.

FLamby's protocol gives every site the same number of local updates per round, whatever its
size; FFL's chest X-ray reference trains one batch per round. The site step trains for whole
epochs, so a step budget runs it for enough epochs and stops it after the last step
(Lightning's ``Trainer.should_stop``, as early stopping does; validation runs then, once).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class StepBudget(Callback):
    """Stops a fit once the trainer has taken ``steps`` optimiser steps.

    Args:
        steps: optimiser steps (``trainer.global_step``); with gradient accumulation, one
            step is ``accumulate_grad_batches`` batches.
    """

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class _WithBudget:
    """``configure_callbacks`` of a learner: its own callbacks, then one more (a :class:`StepBudget`)."""

    def __init__(self, own: Any, budget: Callback) -> None:
        self.own, self.budget = own, budget

    def __call__(self) -> list[Callback]:
        own = self.own() or []
        return [*(own if isinstance(own, (list, tuple)) else [own]), self.budget]


def with_step_budget(learner: pl.LightningModule, steps: int) -> pl.LightningModule:
    """``learner``, whose fits stop after ``steps`` optimiser steps (through Lightning's
    ``configure_callbacks`` hook, which keeps the learner's own callbacks). Its fit must be
    given at least as many epochs as the steps need: ``steps`` epochs always suffice."""
    return with_callback(learner, StepBudget(steps))


def with_callback(learner: pl.LightningModule, callback: Callback) -> pl.LightningModule:
    """``learner``, whose fits also run ``callback`` (through ``configure_callbacks``, after
    the learner's own callbacks)."""
    learner.configure_callbacks = _WithBudget(learner.configure_callbacks, callback)
    return learner
