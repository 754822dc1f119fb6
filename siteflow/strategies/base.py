"""The strategy interface: which sites train in which order, and how weights move.

A strategy answers two questions: what a site does with the weights it receives and its own
data (the site step, carried out by :meth:`SiteRunner.fit`), and how weights move between
sites (the order, rounds and aggregation, written in :meth:`Strategy.run`). The runner that
executes the steps (output folders, Lightning trainers, resuming, test matrix) is passed in,
so a strategy is a short, readable loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol, Sequence

import torch

from siteflow.config import TaskConfig

State = dict[str, torch.Tensor]
"""A model's weights by parameter/buffer name (a ``state_dict`` on the CPU)."""


class SiteRunner(Protocol):
    """What a strategy can ask of the run that executes it."""

    @property
    def tasks(self) -> Sequence[TaskConfig]:
        """The sites trained in this run, in the config's order."""

    def initial_state(self, task: TaskConfig) -> State:
        """The weights ``task`` starts from when nothing was handed to it: its
        ``checkpoint.load`` file if set, else the run's seeded initial weights (the same for
        every site)."""

    def fit(self, stage: str, tasks: Sequence[TaskConfig], state: State, *, save_dir: str) -> State:
        """Train from ``state`` on the pooled training data of ``tasks``; return the final
        weights. A finished stage is not trained again: its saved weights are returned."""

    def test(self, stage: str, state: State, *, trained_site: str | None) -> None:
        """Test ``state`` on every site's test split and record the row ``stage`` of the site
        matrix (``trained_site``: the site this stage trained, if one)."""


class Strategy(ABC):
    """Base class of multi-site strategies; subclasses register with ``STRATEGIES``.

    Options come from ``common.strategy.kwargs`` as typed constructor parameters.
    """

    own_model_per_site: ClassVar[bool] = False
    """True when every site keeps its own final model (local), not one model for all."""

    @abstractmethod
    def run(self, runner: SiteRunner) -> None:
        """Train and test all stages through ``runner``."""
