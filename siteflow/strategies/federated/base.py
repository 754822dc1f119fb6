"""The base class of the federated strategies and its round API, the same for the in-process
simulation and for Flower.

A round has four steps, each a hook a strategy may override (the table of
:class:`FederatedStrategy` lists them all):

1. :meth:`FederatedStrategy.configure`: what every site receives (the server side);
2. :meth:`FederatedStrategy.site_step`: what a site does with it and its own data, and what it
   sends back (a :class:`SiteUpdate`); what never leaves the site stays in its
   :class:`~siteflow.strategies.federated.store.SiteStore`;
3. :meth:`FederatedStrategy.aggregate`: the new global weights from the current ones and the
   updates (the server side; server state such as momentum lives in the strategy and is
   saved with the round through :meth:`~siteflow.strategies.base.Strategy.state_dict`);
4. after the last round, :meth:`FederatedStrategy.site_finish`: an optional last step per
   site (FFL's fine-tuning), tested as the row :attr:`~FederatedStrategy.finish_stage`.

:class:`~siteflow.strategies.federated.federation.Federation` keeps the server's side between
rounds and says what comes next (its :meth:`~siteflow.strategies.federated.federation.Federation.schedule`);
:mod:`~siteflow.strategies.federated.simulation` (this class's :meth:`~FederatedStrategy.run`)
and ``siteflow.deploy.flower`` drive the rounds. Imports run one way: the federation and the
drivers import this module, never the reverse (the engine starts the in-process driver for
:meth:`~FederatedStrategy.run`, through its ``simulate_rounds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence, final

import torch
from torch import nn

from siteflow.config import ExperimentConfig, TrainConfig
from siteflow.core.errors import OptionError
from siteflow.core.plausibility import implausible
from siteflow.core.types import Weights
from siteflow.privacy.central import CentralDPOptions
from siteflow.strategies.base import Rounds, SiteTraining, Strategy, Trainee
from siteflow.strategies.federated.aggregation import Weighting, aggregation_coefficients, weighted_average
from siteflow.strategies.federated.enrolment import Enrolment
from siteflow.strategies.federated.optimizer_state import KeptOptimizerState
from siteflow.strategies.federated.robust import RobustRule, build_rule
from siteflow.strategies.federated.sampling import draw_sites
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import LOCAL
from siteflow.tasks import ExtraLoss, Learner, Task

__all__ = ["FederatedStrategy", "SiteUpdate"]


def round_stage(round_number: int) -> str:
    """The stage name of a round: its row in the site matrix."""
    return f"round{round_number}"


@dataclass
class SiteUpdate:
    """A site's answer in a round: what it sends back, and its training-sample count."""

    site: str
    weights: Weights
    num_samples: int


class FederatedStrategy(Strategy):
    """Base of the federated strategies: rounds of local training and aggregation, whatever
    drives them (:meth:`run` simulates them in one process; ``siteflow.deploy.flower``
    deploys them).

    A subclass overrides hooks; the other public methods are helpers for them, marked
    ``@final`` (:meth:`site_start_weights`, :meth:`local_update`, :meth:`train_locally`,
    :meth:`site_learner`, :meth:`check_update`, :meth:`tests_after`, :meth:`planned_stages`,
    :meth:`run`).

    | hook | where it runs | what it says | default |
    | --- | --- | --- | --- |
    | :meth:`prepare_server` | server, before its first round | readies the aggregation (the network's names and shapes, the sites) | nothing |
    | :meth:`sample_sites` | server | the sites that train in a round | all, or a seeded ``fraction`` |
    | :meth:`local_keys` | both | the weights that never leave a site | none |
    | :meth:`configure` | server | what every site receives | the global weights |
    | :meth:`received_global_weights` | site | the global weights in what it received | all of it |
    | :meth:`site_step` | site | a round's training and what it sends back | :meth:`local_update` |
    | :meth:`extra_losses` | site | terms added to every local step | none |
    | :meth:`aggregate` | server | the new global weights | the weighted average (or ``robust``) |
    | :attr:`finishes`, :meth:`site_finish` | site, after the rounds | a last step per site | none |
    | ``state_dict``, ``load_state_dict`` | server | state kept across rounds (saved with each) | none |
    | ``build_network``, ``solver`` | both | the network that trains and travels; its tested part | the task's model |
    | ``site_visits``, ``check_fits`` | config | trainings per site (DP-SGD's accounting); what the config must satisfy | ``rounds`` (+1 with a finishing step); ``min_sites`` fits |

    Its aggregation, the weighted mean of the sites' updates, is what SecAgg+ can compute: a
    subclass whose server needs more (SCAFFOLD's sums of control variates) declares
    ``aggregates_by_weighted_mean = False``.

    Args:
        rounds: number of rounds.
        local_epochs: epochs each site trains per round.
        weighting: ``"samples"`` (FedAvg: by training-sample count) or ``"equal"``.
        min_sites: a round goes on while at least this many sites replied (default: all the
            round's sites); a site that fails is logged with its name. With ``fraction``,
            also the fewest sites a round samples.
        test_every: test the global model on every site every this many rounds (and after
            the last one).
        fraction: client sampling: the share of the sites that train in a round (in (0, 1]):
            ``ceil(fraction * sites)`` of them, at least ``min_sites``, drawn afresh every
            round from the study's seed and the round number (see :meth:`sample_sites`);
            every site is tested.
        local_steps: the local work of a round in optimiser steps instead of epochs (the
            same for sites of any size, as in FLamby's benchmark); replaces
            ``local_epochs``, which must then be left out.
        schedule: how ``train.scheduler`` (the learning-rate schedule) runs over the rounds:
            ``"per_round"`` (default; Flower and FLamby do so) starts it afresh in every
            round's local training; ``"across_rounds"`` runs it once over all rounds, round r
            starting at epoch ``(r - 1) * local_epochs``, so that a cosine schedule with
            ``T_max: rounds * local_epochs`` anneals to its end in the last round as one
            site's training of that many epochs would. ``across_rounds`` needs a scheduler
            and ``local_epochs`` (a round of ``local_steps`` ends mid-epoch); a
            ``CosineAnnealingLR`` must span the rounds (``T_max`` at least
            ``rounds * local_epochs``).
        keep_optimizer_state: a site's optimiser resumes its state (Adam's moments, step
            counts) from its previous round instead of starting afresh every round (as the
            SSL-FL reference does); kept on the site's disk, never sent (see
            :mod:`~siteflow.strategies.federated.optimizer_state`).
        central_dp: central differential privacy on the server: every update clipped, Gaussian
            noise on their average, fixed or adaptive clipping, with its accounting (the keys
            of :class:`~siteflow.privacy.central.CentralDPOptions`; ``weighting: equal``).
        robust: a robust aggregation rule in place of the weighted average, by name with its
            options beside it (:mod:`~siteflow.strategies.federated.robust`):
            ``{name: median}``, ``{name: trimmed_mean, beta: 0.2}``,
            ``{name: krum, byzantine: 1, select: 1}`` (multi-Krum with ``select > 1``),
            ``{name: clipped_mean, factor: 1.0}`` (updates clipped to ``factor`` times the
            round's median update norm). Not with ``central_dp`` nor secure aggregation.
        enrolled_samples: site name -> the training-sample count it declared when it
            enrolled; a site that claims more in a round is counted with the declared number
            (every site of the study must be declared;
            :mod:`~siteflow.strategies.federated.enrolment`).
    """

    finish_stage: ClassVar[str] = "finished"
    """The site-matrix row of what :meth:`site_finish` returns."""

    aggregates_by_weighted_mean = True

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        weighting: Literal["samples", "equal"] = "samples",
        min_sites: int | None = None,
        test_every: int = 1,
        fraction: float = 1.0,
        local_steps: int | None = None,
        schedule: Literal["per_round", "across_rounds"] = "per_round",
        keep_optimizer_state: bool = False,
        central_dp: dict[str, float | bool | str | None] | None = None,
        robust: dict[str, Any] | None = None,
        enrolled_samples: dict[str, int] | None = None,
    ) -> None:
        for name, value in (("rounds", rounds), ("local_epochs", local_epochs), ("test_every", test_every)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name, value in (("min_sites", min_sites), ("local_steps", local_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if local_steps is not None and local_epochs != 1:
            raise ValueError(f"local_steps={local_steps} replaces local_epochs: set one of them, not both")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if schedule not in ("per_round", "across_rounds"):
            raise OptionError("schedule", f"must be 'per_round' or 'across_rounds', got {schedule!r}")
        if schedule == "across_rounds" and local_steps is not None:
            raise OptionError("schedule", "across_rounds continues the schedule epoch by epoch, and a round of local_steps ends mid-epoch: set local_epochs")
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.weighting: Weighting = weighting
        self.min_sites = min_sites
        self.test_every = test_every
        self.fraction = fraction
        self.local_steps = local_steps
        self.schedule = schedule
        self.keep_optimizer_state = keep_optimizer_state
        self.central_dp = None if central_dp is None else CentralDPOptions.from_mapping(central_dp)
        if self.central_dp is not None and weighting != "equal":
            raise OptionError("weighting", "central_dp bounds one site's share of the average by clip_norm / sites: set weighting: equal")
        self.robust: RobustRule | None = None if robust is None else build_rule(robust)
        if self.robust is not None and self.central_dp is not None:
            raise OptionError("robust", "central_dp's noise and accounting assume the plain average of the clipped updates: use one of them")
        self.enrolment = None if enrolled_samples is None else Enrolment(enrolled_samples)

    # -- the server's view of the study ------------------------------------------------------

    def prepare_server(self, network: nn.Module, sites: Sequence[str]) -> None:
        """Called on the server before its first round (and again when it resumes) with the
        strategy's network on PyTorch's ``meta`` device (names and shapes, no values) and the
        names of the federation's sites, for a strategy whose aggregation needs them (which
        weights are parameters, how many sites there are); nothing by default."""

    def sample_sites(self, round_number: int, sites: Sequence[str], *, seed: int) -> list[str]:
        """The sites of ``sites`` that train in round ``round_number`` (see ``fraction``)."""
        return draw_sites(sites, fraction=self.fraction, min_sites=self.min_sites, seed=seed, round_number=round_number)

    # -- what stays at a site ------------------------------------------------------------------

    def local_keys(self, task: Task) -> set[str]:
        """Names of the weights that stay at each site, never sent nor averaged (none)."""
        return set()

    @final
    def site_start_weights(self, site: FederatedSite, global_weights: Weights, *, before: int) -> Weights:
        """The weights a site works with: the global ones, with the weights it kept after its
        last round before round ``before`` over them."""
        return {**global_weights, **(site.store.load(LOCAL, before=before) or {})}

    # -- 1. configure ----------------------------------------------------------------------------

    def configure(self, round_number: int, global_weights: Weights) -> Weights:
        """What every site receives in round ``round_number``: the global weights."""
        return global_weights

    def received_global_weights(self, received: Weights) -> Weights:
        """The global weights in what :meth:`configure` sent (a deployed site tests them
        before its round's step): all of it."""
        return received

    # -- 2. the site step ------------------------------------------------------------------------

    def site_step(self, site: FederatedSite, received: Weights, round_number: int) -> SiteUpdate:
        """Train ``site`` for a round from what it received (its own kept weights over it);
        keep the local weights, send back the others."""
        return self.local_update(site, self.site_start_weights(site, received, before=round_number), round_number)

    @final
    def local_update(
        self, site: FederatedSite, start: Weights, round_number: int, extra_losses: Sequence[ExtraLoss] = ()
    ) -> SiteUpdate:
        """Train ``site`` for a round's budget from ``start`` (with ``extra_losses`` in every
        step), keep its local weights in its store; the update holds the shared weights."""
        weights = self.train_locally(site, f"round{round_number}/{site.name}", start, extra_losses, round_number=round_number)
        local_keys = self.local_keys(site.context.task)
        if local_keys:
            site.store.save(LOCAL, round_number, {k: v for k, v in weights.items() if k in local_keys})
        shared = {name: tensor for name, tensor in weights.items() if name not in local_keys}
        return SiteUpdate(site.name, shared, site.num_samples)

    @final
    def train_locally(
        self,
        site: FederatedSite,
        stage: str,
        start: Weights,
        extra_losses: Sequence[ExtraLoss] = (),
        *,
        round_number: int,
        model: str = "global",
    ) -> Weights:
        """``site``'s weights after a round's budget of training (``local_epochs``, or
        ``local_steps`` optimiser steps) from ``start``, with ``extra_losses`` in every step.
        ``model`` names what is trained when a site trains several models in a round (its
        optimiser state is kept under that name, its random stream differs)."""
        context = site.context
        seed_offset = 1000 * round_number + (0 if model == "global" else 500)

        kept = [KeptOptimizerState(site.store, f"optimizer_{model}", round_number)] if self.keep_optimizer_state else []
        trainee = Trainee(
            lambda: self.build_network(context.task),
            lambda network: self.site_learner(context, site, network, start, extra_losses),
            callbacks=lambda network: kept,
            max_steps=self.local_steps,
            schedule_epoch=(round_number - 1) * self.local_epochs if self.schedule == "across_rounds" else 0,
        )
        epochs = self.local_epochs if self.local_steps is None else self.local_steps  # a step budget stops earlier
        return site.fit(stage, start, trainee, epochs=epochs, seed_offset=seed_offset)

    @final
    def site_learner(
        self, context: SiteTraining, site: FederatedSite, network: nn.Module, start: Weights, extra_losses: Sequence[ExtraLoss]
    ) -> Learner:
        """The learner of a site's round: the task's, with the strategy's extra loss terms."""
        task, train = context.task, site.site_run.train
        terms = [*self.extra_losses(start), *extra_losses]
        return task.learner(network, task.build_loss(train, [site.site_run.site]), train, extra_losses=terms)

    def extra_losses(self, start: Weights) -> list[ExtraLoss]:
        """Terms added to every local step of a round that started from ``start`` (none)."""
        return []

    # -- 3. aggregate ----------------------------------------------------------------------------

    @final
    def check_update(self, update: SiteUpdate, global_weights: Weights, shared: set[str]) -> str | None:
        """Why ``update`` cannot be aggregated (None if it can): a sample count that is not a
        positive integer, a missing shared weight (``shared``: the names every site sends),
        a weight of another shape or dtype than the global one, a value that is not finite, or
        one that training cannot produce (:func:`~siteflow.core.plausibility.implausible`:
        a negative variance or counter, a magnitude far beyond the global weights')."""
        if isinstance(update.num_samples, bool) or not isinstance(update.num_samples, int) or update.num_samples < 1:
            return f"sample count {update.num_samples!r} is not a positive integer"
        missing = sorted(shared - set(update.weights))
        if missing:
            return f"{len(missing)} weights are missing, e.g. {missing[:3]}"
        for name, tensor in update.weights.items():
            if not isinstance(tensor, torch.Tensor):
                return f"{name} is not a tensor"
            expected = global_weights.get(name)
            if expected is not None and (tensor.shape != expected.shape or tensor.dtype != expected.dtype):
                return f"{name} is {tensor.dtype} {tuple(tensor.shape)}, the global weights hold {expected.dtype} {tuple(expected.shape)}"
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{name} holds values that are not finite"
        return implausible(update.weights, global_weights)

    def aggregate(self, round_number: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        """The new global weights: the weighted average of what the sites sent (or the
        ``robust`` rule's aggregate; sample counts capped by ``enrolled_samples``), over the
        current global weights (which keep what nobody sent)."""
        counts = [u.num_samples for u in updates]
        if self.enrolment is not None:
            counts = [self.enrolment.cap(round_number, u.site, u.num_samples) for u in updates]
        weights = aggregation_coefficients(counts, self.weighting)
        shared = list(updates[0].weights)
        if self.robust is None:  # one weight of every update at a time (a simulation's wait on disk)
            return {**global_weights, **weighted_average([u.weights for u in updates], weights, keys=shared)}
        states = [{name: u.weights[name] for name in shared} for u in updates]
        return {**global_weights, **self.robust.combine(round_number, [u.site for u in updates], states, weights, global_weights)}

    # -- 4. finish ---------------------------------------------------------------------------------

    @property
    def finishes(self) -> bool:
        """Whether the sites take a finishing step (:meth:`site_finish`) after the rounds."""
        return False

    def site_finish(self, site: FederatedSite, global_weights: Weights) -> Weights:
        """A site's last step after the final round, from the final global weights; its
        result is tested as the row :attr:`finish_stage`. Only called when :attr:`finishes`."""
        raise NotImplementedError(f"{type(self).__name__} has no finishing step")

    # -- testing ---------------------------------------------------------------------------------

    @final
    def tests_after(self, round_number: int) -> bool:
        """Whether the global model is tested after round ``round_number``."""
        return round_number % self.test_every == 0 or round_number == self.rounds


    # -- declarations and the run ----------------------------------------------------------------

    def site_visits(self) -> int:
        """Each site trains once a round, and once more when the strategy finishes (FFL's
        fine-tuning)."""
        return self.rounds + int(self.finishes)

    def check_fits(self, config: ExperimentConfig) -> None:
        """``min_sites`` is at most the sites that train (in a deployed run: the study's); a
        schedule ``across_rounds`` has a scheduler that spans the rounds at every site."""
        sites = len(config.sites) if config.deployed else len(config.site_runs)
        if self.min_sites is not None and self.min_sites > sites:
            raise OptionError("min_sites", f"is {self.min_sites}, but the study trains only {sites} sites")
        if self.schedule == "across_rounds":
            for site_run in config.site_runs:
                check_schedule_spans(site_run.train, self.rounds * self.local_epochs, site_run.task_name)

    @final
    def planned_stages(self, context: SiteTraining) -> list[str]:
        """Every round's sampled sites, ``round<r>/<site>`` (a further step in a round or
        after the rounds counts as part of the stage before it)."""
        names = [site_run.task_name for site_run in context.site_runs]
        return [f"{round_stage(r)}/{site}" for r in range(1, self.rounds + 1) for site in self.sample_sites(r, names, seed=context.config.seed)]

    @final
    def run(self, context: Rounds) -> None:
        """The rounds simulated in this process by the run's driver (``siteflow.deploy.flower``
        deploys them)."""
        context.simulate_rounds(self)


def check_schedule_spans(train: TrainConfig, epochs: int, site: str) -> None:
    """Refuse (as the option ``schedule``) a ``train`` whose learning-rate schedule cannot run
    across ``epochs`` local epochs of the rounds: none at all, or a ``CosineAnnealingLR``
    whose ``T_max`` ends before them (its rate would climb back up)."""
    if train.scheduler is None:
        raise OptionError("schedule", f"across_rounds runs train.scheduler over the rounds, but site {site!r} has none: set one, or schedule: per_round")
    t_max = train.scheduler.kwargs.get("T_max")
    if train.scheduler.name == "CosineAnnealingLR" and isinstance(t_max, int) and t_max < epochs:
        raise OptionError(
            "schedule",
            f"across_rounds runs the schedule of site {site!r} over rounds x local_epochs = {epochs} epochs, but its "
            f"train.scheduler.kwargs.T_max is {t_max}: the cosine would climb back up; set T_max: {epochs}",
        )
