"""The strategy interface: which sites train in which order, and how weights move.

A strategy answers two questions: what a site does with the weights it receives and its own
data (the site step, carried out by :meth:`SiteRunner.fit` with the strategy's network and
learner), and how weights move between sites (the order, rounds and aggregation, written in
:meth:`Strategy.run`). The runner that executes the steps (output folders, Lightning
trainers, resuming, hand-over files, the test matrix) is passed in, so a strategy is a
short, readable loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping, Protocol, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from siteflow.config import TaskConfig, TrainConfig
from siteflow.handover import SiteRecord
from siteflow.tasks.learner import ExtraLoss

State = dict[str, torch.Tensor]
"""A network's weights by parameter/buffer name (a ``state_dict`` on the CPU)."""


@dataclass(frozen=True)
class Carried:
    """What a site receives: weights, and the chain of sites that trained them, in order."""

    weights: State
    sites: tuple[SiteRecord, ...] = ()


class SiteRunner(Protocol):
    """What a strategy can ask of the run that executes it."""

    @property
    def tasks(self) -> Sequence[TaskConfig]:
        """The sites trained in this run, in the config's order."""

    def build_model(self) -> nn.Module:
        """A new model of the configured architecture, sized by the data."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Segmentation classes (background first), or the study's multi-label label space
        (the union of all sites' labels)."""

    @property
    def in_channels(self) -> int:
        """Channels of the input images."""

    @property
    def image_size(self) -> tuple[int, ...]:
        """Spatial size of the (resized) input images."""

    @property
    def ignore_index(self) -> int | None:
        """Label value that losses and metrics skip, if any."""

    def build_loss(self, train: TrainConfig, tasks: Sequence[TaskConfig] = ()) -> nn.Module:
        """The configured loss (multi-label: ``pos_weight`` from the training data of ``tasks``)."""

    def learner(
        self,
        model: nn.Module,
        train: TrainConfig,
        *,
        tasks: Sequence[TaskConfig] = (),
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> pl.LightningModule:
        """The standard learner of the data's task (segmentation or multi-label
        classification) around ``model``, for training at ``tasks`` or testing on
        ``test_site_names``; ``extra_losses`` are added to the loss of every training step."""

    def initial_state(self, task: TaskConfig) -> Carried:
        """What ``task`` starts from when nothing was handed to it in this run: its
        ``checkpoint.load`` file (verified) if set, else the run's seeded initial weights."""

    def fit(
        self,
        stage: str,
        tasks: Sequence[TaskConfig],
        carried: Carried,
        *,
        save_dir: str | None,
        epochs: int | None = None,
        seed_offset: int = 0,
    ) -> State:
        """Train from ``carried`` on the pooled training data of ``tasks``; return the final
        weights. With ``save_dir``, the stage checkpoints every epoch and saves its final
        weights, and a finished stage is not trained again (its weights are read back);
        without, nothing is saved (a site's step in a federated round). ``epochs`` overrides
        the site's ``train.epochs``; ``seed_offset`` varies the seed (e.g. by round)."""

    def site_record(self, task: TaskConfig) -> SiteRecord:
        """The record of ``task`` for the chain of a hand-over (id, name, samples, time)."""

    def hand_over(self, carried: Carried, *, save_dir: str) -> Path:
        """Write ``carried`` as the hand-over file of the stage saved in ``save_dir``."""

    def test(
        self, stage: str, weights: State, *, trained_site: str | None, site_weights: Mapping[str, State] | None = None
    ) -> None:
        """Test the strategy's solver in ``weights`` on every site's test split and record
        the row ``stage`` of the site matrix (``trained_site``: the site this stage trained).
        ``site_weights`` gives some test sites (by name) weights of their own."""

    def save_state(self, name: str, tensors: State, info: dict) -> None:
        """Save strategy state atomically (``checkpoints/<name>.safetensors`` with JSON ``info``)."""

    def save_final(self, stage: str, weights: State, *, save_dir: str, site_weights: Mapping[str, State] | None = None) -> None:
        """Save a stage's final weights (and each site's own, where sites keep some) for
        prediction, when :meth:`fit` did not."""

    def load_state(self, name: str) -> tuple[State, dict] | None:
        """What :meth:`save_state` saved under ``name``, or None."""


class Strategy(ABC):
    """Base class of multi-site strategies; subclasses register with ``STRATEGIES``.

    Options come from ``common.strategy.kwargs`` as typed constructor parameters. By default
    the network that trains and travels is the configured segmentation model, trained by the
    standard learner; a strategy with more networks (relay's generators) overrides
    :meth:`build_network`, :meth:`make_learner` and :meth:`solver`.
    """

    own_model_per_site: ClassVar[bool] = False
    """True when every site keeps its own final model (local), not one model for all."""

    hands_over: ClassVar[bool] = False
    """True when the model travels from site to site (a hand-over file after every site)."""

    cycles: int = 1
    """Passes over the site order (the relay order a hand-over is checked against repeats)."""

    def build_network(self, runner: SiteRunner) -> nn.Module:
        """A new network whose weights train at a site and move between sites."""
        return runner.build_model()

    def make_learner(
        self, runner: SiteRunner, network: nn.Module, tasks: Sequence[TaskConfig], carried: Carried
    ) -> pl.LightningModule:
        """The LightningModule that trains ``network`` at ``tasks`` after receiving ``carried``."""
        return runner.learner(network, tasks[0].train, tasks=tasks)

    def solver(self, network: nn.Module) -> nn.Module:
        """The part of ``network`` that segments images (what is tested)."""
        return network

    @abstractmethod
    def run(self, runner: SiteRunner) -> None:
        """Train and test all stages through ``runner``."""
