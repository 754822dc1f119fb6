"""The strategy interface: which sites train in which order, and how weights move.

A strategy answers two questions: what a site does with the weights it receives and its own
data (the site step: the network and learner it passes to :meth:`StudyContext.fit`), and how
weights move between sites (the order, rounds and aggregation, written in
:meth:`Strategy.run`). The engine that executes the steps (run folder, Lightning trainers,
resuming, hand-over files, the site matrix) implements :class:`StudyContext` and never asks
what kind of strategy called it: everything that differs is passed in.

A strategy with state (server momentum, control variates, counters) returns it from
:meth:`Strategy.state_dict` and takes it back in :meth:`Strategy.load_state_dict`; the
engine saves it with every stage the strategy finishes and with every federated round, and
gives it back when a resumed run reads that stage or round back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import nn

from siteflow.config import ExperimentConfig, SiteRun
from siteflow.core.site_matrix import StageResult, summarize
from siteflow.core.types import SiteRecord, Tensors, Weights
from siteflow.tasks import Task

SolverFactory = Callable[[Weights], nn.Module]
"""Weights -> the network that is tested (the solver of a network with several parts)."""


class SetupRefused(ValueError):
    """A strategy cannot run with this run's setup (devices, precision, ...); says why."""


@dataclass(frozen=True)
class SiteInput:
    """What a site receives: weights, and the chain of sites that trained them, in order."""

    weights: Weights
    sites: tuple[SiteRecord, ...] = ()


@dataclass(frozen=True)
class Trainee:
    """What trains at a site, as factories the engine calls after seeding: the network
    (which then receives the start weights) and the LightningModule that trains it; and what
    the site step's Lightning trainer gets besides (the learner itself is never patched)."""

    build_network: Callable[[], nn.Module]
    make_learner: Callable[[nn.Module], pl.LightningModule]
    callbacks: Callable[[nn.Module], Sequence[Callback]] = lambda network: ()
    """The network -> Lightning callbacks of the fit, run after the engine's own (a continual
    strategy's updates of the tensors the network carries, a site's kept optimiser state);
    called after :attr:`make_learner`."""
    max_steps: int | None = None
    """Stop the fit after this many optimiser steps (Lightning's ``max_steps``), even in the
    middle of an epoch, validating once at the stop; None: the fit's epochs decide."""
    schedule_epoch: int = 0
    """The epoch of ``train.scheduler`` the fit starts at (0: the schedule's start): a
    federation whose schedule runs across its rounds starts round r where round r - 1 ended."""


class SiteTraining(Protocol):
    """The run's role that trains sites: the study, and what a site starts from, trains and
    is tested with (implemented by the engine, as are the other roles)."""

    config: ExperimentConfig
    task: Task

    @property
    def site_runs(self) -> Sequence[SiteRun]:
        """The sites trained in this run, in the config's order."""

    def start(self, site_run: SiteRun, build_network: Callable[[], nn.Module], *, site_order: Sequence[int] | None = None) -> SiteInput:
        """What ``site_run`` starts from when nothing was handed to it in this run: its
        ``checkpoint.load`` hand-over file, verified (against the network's shapes, and,
        with ``site_order``, against the relay order: the chain so far must be its prefix
        and ``site_run`` the next site), else the run's seeded initial weights."""

    def fit(
        self,
        stage: str,
        site_runs: Sequence[SiteRun],
        start: Weights,
        trainee: Trainee,
        *,
        save_dir: str | None,
        epochs: int | None = None,
        seed_offset: int = 0,
    ) -> Weights:
        """Train ``trainee`` from ``start`` on the pooled training data of ``site_runs``; return
        the final weights. With ``save_dir``, the stage checkpoints every epoch and saves its
        final weights, and a finished stage is not trained again (its weights are read
        back); without, nothing is saved (a site's step in a federated round). ``epochs``
        overrides the site's ``train.epochs``; ``seed_offset`` varies the seed."""

    def evaluate(
        self, weights: Weights, solver: SolverFactory, *, own_weights: Mapping[str, Weights] | None = None,
        sites: Sequence[str] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Test ``solver(weights)`` on the test split of every site whose data is here (only
        ``sites``, if given); ``own_weights`` gives some sites weights of their own.
        Returns ``values[site][metric]``."""

    def sample_count(self, site_run: SiteRun) -> int:
        """The number of training samples of ``site_run``."""


class Recording(Protocol):
    """The run's role that records results: the rows of the site matrix and a strategy's own
    result files."""

    def test(
        self, stage: str, weights: Weights, solver: SolverFactory, *, trained_site: str | None,
        own_weights: Mapping[str, Weights] | None = None,
    ) -> None:
        """:meth:`evaluate`, then :meth:`record` the row ``stage`` (not again if recorded)."""

    def record(self, stage: str, values: Mapping[str, Mapping[str, float]], *, trained_site: str | None) -> None:
        """Add the row ``stage`` of the site matrix, ``values[site][metric]`` (tested here or
        reported by the sites); a row recorded before is kept."""

    def recorded(self, stage: str) -> bool:
        """Whether the row ``stage`` is in the site matrix already."""

    def result_path(self, name: str) -> Path:
        """Where a strategy writes a result of its own (a file ``name`` beside the site
        matrices: ``results/<name>`` of the run folder)."""


class Relay(Protocol):
    """The run's role that hands a model over to the next site: the chain of sites and the
    verified hand-over file."""

    def hand_over(self, carried: SiteInput, *, save_dir: str) -> Path:
        """Write ``carried`` as the hand-over file of the stage saved in ``save_dir``."""

    def site_record(self, site_run: SiteRun) -> SiteRecord:
        """The record of ``site_run`` for the chain of a hand-over (id, name, samples, time)."""


class Storage(Protocol):
    """The run's role that keeps files: final weights for prediction, a driver's state (a
    federation's rounds; the strategy's own state is kept with it) and each site's own folder."""

    def save_final(self, stage: str, weights: Weights, *, save_dir: str, own_weights: Mapping[str, Weights] | None = None) -> None:
        """Save a stage's final weights (and each site's own, where sites keep some) for
        prediction, when :meth:`fit` did not."""

    def save_state(self, name: str, tensors: Tensors, info: dict) -> None:
        """Save a driver's state (a federation's round) atomically as
        ``checkpoints/<name>.safetensors`` with JSON ``info``, the strategy's own state in the
        same file (its tensors under ``strategy/``, its values under ``info["strategy"]``)."""

    def load_state(self, name: str) -> tuple[Tensors, dict] | None:
        """What :meth:`save_state` saved under ``name`` (the strategy's part included), or
        None; the strategy gets the state saved with it back."""

    def site_folder(self, site: str) -> Path:
        """A folder of ``site``'s own files (a deployed site's disk; in a simulation, one
        folder per site inside the run)."""


class Rounds(Protocol):
    """The run's role that drives a federated strategy's rounds in this process (the engine
    owns the driver, so that the strategies' round API never imports it)."""

    def simulate_rounds(self, strategy: Strategy) -> None:
        """Run (or resume) every round of ``strategy``, a federated strategy, over the run's
        sites (:func:`siteflow.strategies.federated.simulation.simulate`)."""


class StudyContext(SiteTraining, Recording, Relay, Storage, Rounds, Protocol):
    """Everything a strategy can ask of the run that executes it, by role:
    :class:`SiteTraining` (``config``, ``task``, ``site_runs``, ``start``, ``fit``,
    ``evaluate``, ``sample_count``), :class:`Recording` (``test``, ``record``, ``recorded``,
    ``result_path``), :class:`Relay` (``hand_over``, ``site_record``), :class:`Storage`
    (``save_final``, ``save_state``, ``load_state``, ``site_folder``) and :class:`Rounds`
    (``simulate_rounds``). The engine's ``ExperimentRun`` implements all five; code that needs
    only some of them (a helper, a strategy's method) asks for those roles alone."""


class Strategy(ABC):
    """Base class of multi-site strategies; subclasses register with ``STRATEGIES``.

    Options come from ``common.strategy.kwargs`` as typed constructor parameters (a subclass
    takes its own and passes the rest with ``**kwargs``). By default the network that trains
    and travels is the task's model, trained by the task's learner; a strategy with more
    networks (relay's generators) overrides :meth:`build_network`, :meth:`make_learner` and
    :meth:`solver`.

    What a strategy can do is declared here, and the config, privacy and deployment layers ask
    these declarations (never an attribute by guess):

    - :attr:`supports_dp_sgd`: its site steps are plain training steps that DP-SGD can make
      private (relay's, which train generators on replays, are not);
    - :attr:`aggregates_by_weighted_mean`: its server needs only the weighted mean of what the
      sites send, the one thing secure aggregation (SecAgg+) reveals;
    - :meth:`site_visits`: how many times each site trains in a run (DP-SGD's accountant spends
      a site's privacy budget over them);
    - :meth:`check_fits`: what it checks about the rest of the config.
    """

    supports_dp_sgd: ClassVar[bool] = True
    """Whether DP-SGD can make its site steps private (plain training steps)."""

    aggregates_by_weighted_mean: ClassVar[bool] = False
    """Whether its server needs only the weighted mean of the sites' updates (what SecAgg+
    reveals); False for strategies without a server and those that need more."""

    def site_visits(self) -> int:
        """How many times each site trains in a run: once, unless the strategy says otherwise."""
        return 1

    def check_fits(self, config: ExperimentConfig) -> None:
        """Refuse, with :class:`~siteflow.core.errors.OptionError` naming its option, a
        config this strategy cannot run (called after the config is validated); nothing by
        default."""

    def build_network(self, task: Task) -> nn.Module:
        """A new network whose weights train at a site and move between sites."""
        return task.build_model()

    def make_learner(
        self, context: SiteTraining, network: nn.Module, site_runs: Sequence[SiteRun], carried: SiteInput
    ) -> pl.LightningModule:
        """The LightningModule that trains ``network`` at ``site_runs`` after receiving ``carried``."""
        train = site_runs[0].train
        task = context.task
        return task.learner(network, task.build_loss(train, [t.site for t in site_runs]), train)

    def solver(self, network: nn.Module) -> nn.Module:
        """The part of ``network`` that is tested (segments or classifies images)."""
        return network

    def solver_from(self, task: Task) -> SolverFactory:
        """Weights -> the solver loaded with them."""

        def build(weights: Weights) -> nn.Module:
            network = self.build_network(task)
            network.load_state_dict(weights)
            return self.solver(network)

        return build

    def trainee(self, context: SiteTraining, site_runs: Sequence[SiteRun], carried: SiteInput) -> Trainee:
        """The network and learner factories of a site step at ``site_runs`` from ``carried``."""
        return Trainee(
            lambda: self.build_network(context.task),
            lambda network: self.make_learner(context, network, site_runs, carried),
        )

    def planned_stages(self, context: SiteTraining) -> list[str] | None:
        """The stages a whole run trains, in order: the names it passes to
        :meth:`StudyContext.fit` (numbered "stage k of n" in the progress lines); None (the
        default): not known, counted as "k of ?"."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The strategy's own state (tensors and JSON-able values; a counter, server momentum),
        saved by the engine with every stage it finishes (before the stage's final weights) and
        every federated round; nothing by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned: called by the engine when a resumed run
        reads a finished stage (or a federation its last round) back, so :meth:`run`'s replay of
        its loop reaches the first unfinished stage with the state the interrupted run had."""

    def summarize(self, rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> dict:
        """The summary of ``metric`` over the site matrix: by default the last row's values
        per site and the backward transfer."""
        return summarize(rows, site_names, metric)

    @abstractmethod
    def run(self, context: StudyContext) -> None:
        """Train and test all stages through ``context``."""
