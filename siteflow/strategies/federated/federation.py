"""The server's side of the rounds, between rounds: the same for both drivers.

After every round, the round number, the global weights and the SHA-256 of every round's
global weights so far are saved atomically in one file
(``checkpoints/global/round_state.safetensors``), through the run's ``save_state``, which
keeps the strategy's own state (server momentum, control variates, ...) in the same file and
gives it back when the file is read; a restarted run continues after the last saved round
with everything as it was. The sites that train in
a round are drawn here (the strategy's ``sample_sites``, seeded by the study's seed and the
round): the same in both drivers and after a restart.

What comes next is the federation's :meth:`Federation.schedule`: the steps :class:`Train`,
:class:`Evaluate`, :class:`SaveFinal` and :class:`Finish`, from where a restarted run stands.
Both drivers walk it, each doing a step its own way (the Flower server sends a round's test
along with the next round's training).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from siteflow.core.atomic import write_json
from siteflow.core.io import weights_sha256
from siteflow.core.types import Tensors, Weights
from siteflow.privacy import CENTRAL_FILE
from siteflow.privacy.central import CentralDP
from siteflow.strategies.base import StudyContext
from siteflow.strategies.federated.base import FederatedStrategy, SiteUpdate, round_stage

log = logging.getLogger(__name__)

ROUND_STATE = "global/round_state"
FINAL_DIR = "global"


class TooFewSites(RuntimeError):
    """A round closed with fewer valid updates than the strategy's ``min_sites``: the
    federation stops (its last saved round stays, to resume from)."""


@dataclass(frozen=True)
class Train:
    """Round ``round_number``: its sampled sites train, the server aggregates and saves the round."""

    round_number: int


@dataclass(frozen=True)
class Evaluate:
    """Every site tests the global model of round ``round_number`` (the row ``round<r>``)."""

    round_number: int


@dataclass(frozen=True)
class SaveFinal:
    """Save the last round's global weights (and the sites' own, where the driver sees them)."""


@dataclass(frozen=True)
class Finish:
    """Every site takes the strategy's finishing step, tested as its ``finish_stage`` row."""


Step = Train | Evaluate | SaveFinal | Finish
"""A step of a federation's :meth:`~Federation.schedule`."""


class Federation:
    """Round number and global weights of a federation, saved every round.

    Args:
        strategy: the federated strategy.
        context: the server's run (its folder holds the round state, and the strategy's own
            state with it).
    """

    def __init__(self, strategy: FederatedStrategy, context: StudyContext) -> None:
        self.strategy = strategy
        self.context = context
        self.local_keys = strategy.local_keys(context.task)
        self.site_names = [site_run.task_name for site_run in context.site_runs]
        with torch.device("meta"):  # names and shapes, no memory
            network = strategy.build_network(context.task)
        strategy.prepare_server(network, self.site_names)
        if strategy.enrolment is not None:
            strategy.enrolment.check_sites(self.site_names)
        self.central_dp = None if strategy.central_dp is None else CentralDP(
            strategy.central_dp, seed=context.config.seed, sample_rate=strategy.fraction,
            sites=len(strategy.sample_sites(1, self.site_names, seed=context.config.seed)),
        )
        saved = context.load_state(ROUND_STATE)
        if saved is None:
            first = context.site_runs[0]
            self.round = 0
            self.global_weights: Weights = context.start(first, lambda: strategy.build_network(context.task)).weights
            self.digests: list[str] = []
            return
        tensors, info = saved
        self.round = info["round"]
        self.global_weights = _prefixed(tensors, "global/")
        self.digests = list(info["digests"])
        if self.central_dp is not None:
            self.central_dp.restore(info["central_dp"])
        log.info("resuming the federation after round %d", self.round)

    @property
    def done(self) -> bool:
        return self.round >= self.strategy.rounds

    def schedule(self) -> Iterator[Step]:
        """The steps left, from the last saved round: its final weights again if the rounds
        are over (a run stopped before saving them), its test if it is due and was not
        recorded, then every remaining round's :class:`Train`, the final weights after the
        last one, each due :class:`Evaluate`, and the strategy's :class:`Finish` unless
        recorded. A driver closes each :class:`Train`'s round before it asks for the next
        step (the schedule reads the saved round); it may hold an :class:`Evaluate` back to
        send it with the next round's training, as the Flower server does."""
        if self.done:
            yield SaveFinal()
        if self.pending_test():
            yield Evaluate(self.round)
        for round_number in range(self.round + 1, self.strategy.rounds + 1):
            yield Train(round_number)
            if self.done:
                yield SaveFinal()
            if self.strategy.tests_after(round_number):
                yield Evaluate(round_number)
        if self.strategy.finishes and not self.context.recorded(self.strategy.finish_stage):
            yield Finish()

    def sample(self, round_number: int) -> list[str]:
        """The names of the sites that train in ``round_number`` (the strategy's client
        sampling, seeded by the study's seed and the round); a sample is logged."""
        sampled = self.strategy.sample_sites(round_number, self.site_names, seed=self.context.config.seed)
        if len(sampled) < len(self.site_names):
            log.info("round %d: %d of %d sites sampled: %s", round_number, len(sampled), len(self.site_names), ", ".join(sampled))
        return sampled

    def configure(self, round_number: int) -> Weights:
        """What every site receives in ``round_number``."""
        return self.strategy.configure(round_number, self.global_weights)

    def close_round(self, round_number: int, updates: Sequence[SiteUpdate], num_sites: int) -> None:
        """Aggregate the sites' valid ``updates`` of ``round_number`` and save the federation.
        An update that cannot be aggregated (see ``check_update``), that names other tensors
        than the first valid one, or a second one from the same site, is left out with the site's name and the reason in the log; fewer than
        ``min_sites`` valid updates (of ``num_sites`` asked) stop the run."""
        updates = self._valid(round_number, updates)
        required = self.strategy.min_sites or num_sites
        if len(updates) < required:
            raise TooFewSites(f"round {round_number}: {len(updates)} of {num_sites} sites sent a usable update, fewer than min_sites={required}")
        order = {site.task_name: index for index, site in enumerate(self.context.config.sites)}
        updates = sorted(updates, key=lambda update: order[update.site])  # the same sums, whatever the arrival order
        if self.central_dp is not None:  # clipped updates, one noise draw on their average
            noisy = self.central_dp.privatize(round_number, self.global_weights, [update.weights for update in updates])
            updates = [dataclasses.replace(update, weights=weights) for update, weights in zip(updates, noisy)]
        self.global_weights = self.strategy.aggregate(round_number, self.global_weights, updates)
        self.round = round_number
        self.digests.append(weights_sha256(self.global_weights))
        self._save()

    def save_final(self, own_weights: dict[str, Weights] | None = None) -> None:
        """Save the last round's global weights (and each site's own model, where sites keep
        weights and the server can see them) for ``predict_test.py``."""
        self.context.save_final(round_stage(self.round), self.global_weights, save_dir=FINAL_DIR, own_weights=own_weights)

    def _valid(self, round_number: int, updates: Sequence[SiteUpdate]) -> list[SiteUpdate]:
        shared = set(self.global_weights) - self.local_keys
        known = {site.task_name for site in self.context.config.sites}
        valid: dict[str, SiteUpdate] = {}
        for update in updates:
            if update.site not in known:
                reason = "it is not a site of this study"
            elif update.site in valid:
                reason = "a second reply in the same round (the first is kept)"
            else:
                reason = self.strategy.check_update(update, self.global_weights, shared) or _other_names(update, valid)
            if reason is None:
                valid[update.site] = update
            else:
                log.error("round %d: site %s left out of the average: %s", round_number, update.site, reason)
        return list(valid.values())

    def pending_test(self) -> bool:
        """Whether the last saved round is due a test that was not recorded (a run stopped
        between saving a round and testing it)."""
        return bool(self.round) and self.strategy.tests_after(self.round) and not self.context.recorded(round_stage(self.round))

    def _save(self) -> None:
        tensors = {f"global/{k}": v for k, v in self.global_weights.items()}
        saved = {"round": self.round, "digests": self.digests}
        if self.central_dp is not None:
            saved["central_dp"] = self.central_dp.report()
            write_json(self.context.result_path(CENTRAL_FILE), saved["central_dp"])
            log.info(
                "round %d: central DP, epsilon %.3f at delta %g", self.round, saved["central_dp"]["epsilon"], self.central_dp.options.delta
            )
        self.context.save_state(ROUND_STATE, tensors, saved)


def _other_names(update: SiteUpdate, valid: dict[str, SiteUpdate]) -> str | None:
    """Why ``update`` cannot be averaged with the updates already kept: it names other
    tensors than the first of them (None when it names the same, or is the first)."""
    if not valid:
        return None
    first = next(iter(valid.values()))
    extra, lacking = sorted(set(update.weights) - set(first.weights)), sorted(set(first.weights) - set(update.weights))
    if not extra and not lacking:
        return None
    return f"it sends other tensors than site {first.site} (extra {extra[:3]}, lacking {lacking[:3]})"


def _prefixed(tensors: Tensors, prefix: str) -> Tensors:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
