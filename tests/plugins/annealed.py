"""Annealed sequential fine-tuning as a siteflow plug-in: a strategy with a counter of its own.

The model walks the site order ``walks`` times, as ``sequential`` does with ``cycles``; the
learning rate of every stage is the configured one times ``decay`` to the power of the stages
trained before it. The count of trained stages lives on the strategy (``self.trained``) and is
its state: the engine saves it with every finished stage and gives it back when a resumed run
reads that stage back, so a run killed midway ends with the weights of one that never stopped.
Its counter of visits has its own name, declared through ``site_visits`` (DP-SGD's accountant
spends a site's budget over them). One file, registered through the ``siteflow.plugins``
entry point; it changes no siteflow module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import pytorch_lightning as pl
from torch import nn

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.sequential import SequentialStrategy


@STRATEGIES.register("annealed_plugin")
class AnnealedSequential(SequentialStrategy):
    """Sequential fine-tuning whose learning rate shrinks with every stage trained.

    Args:
        walks: passes over the site order (``sequential``'s ``cycles``).
        decay: the factor on the learning rate after every trained stage, in (0, 1].
    """

    def __init__(self, walks: int = 1, decay: float = 0.5) -> None:
        super().__init__(cycles=walks)
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.walks = walks
        self.decay = decay
        self.trained = 0

    def site_visits(self) -> int:
        """Each site trains once per walk."""
        return self.walks

    def make_learner(self, context: Any, network: nn.Module, site_runs: Any, carried: Any) -> pl.LightningModule:
        """The task's learner at the rate of this stage; called only for a stage that trains."""
        train = site_runs[0].train
        optimizer = train.optimizer
        rate = optimizer.kwargs["lr"] * self.decay**self.trained
        self.trained += 1
        train = dataclasses.replace(train, optimizer=dataclasses.replace(optimizer, kwargs={**optimizer.kwargs, "lr": rate}))
        return context.task.learner(network, context.task.build_loss(train, [t.site for t in site_runs]), train)

    def state_dict(self) -> dict[str, Any]:
        return {"trained": self.trained}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.trained = int(state["trained"])
