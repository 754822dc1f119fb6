"""fedavg and fedprox: federated rounds, simulated in one process.

Every round, each site trains ``local_epochs`` from the global weights on its own data; only
weights travel, and the server averages them (by training-sample count, or equally). FedProx
adds ``mu / 2 * ||w - w_global||^2`` to every local step; ``keep_local_norm`` (FedBN) keeps
the normalisation layers at each site: they are neither averaged nor sent, and each site is
tested with its own. The site step and the aggregation are public methods, so the Flower
adaptors in ``siteflow.deploy.flower`` run exactly the same code in a deployed federation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from siteflow.strategies.federated.aggregation import Weighting, site_weights, weighted_average
from siteflow.config import TaskConfig
from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import Carried, SiteRunner, State, Strategy

log = logging.getLogger(__name__)

ROUND_STATE = "global/round_state"
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def round_stage(round_number: int) -> str:
    """The stage name of a round: its row in the site matrix."""
    return f"round{round_number}"


@dataclass
class SiteUpdate:
    """A site's answer in a round: its trained weights and its training-sample count."""

    site: str
    weights: State
    num_samples: int


@dataclass
class Federation:
    """The server's state between rounds: last finished round, global and site-local weights."""

    round: int
    global_weights: State
    local_weights: dict[str, State] = field(default_factory=dict)


class ProximalTerm:
    """FedProx's ``mu / 2 * sum ||w - w_global||^2`` over the trainable parameters."""

    def __init__(self, anchor: Mapping[str, torch.Tensor], mu: float) -> None:
        self.anchor = dict(anchor)
        self.mu = mu

    def __call__(self, learner: pl.LightningModule) -> torch.Tensor:
        terms = [
            (parameter - self.anchor[name].to(parameter.device, parameter.dtype)).pow(2).sum()
            for name, parameter in learner.model.named_parameters()
            if parameter.requires_grad
        ]
        return 0.5 * self.mu * torch.stack(terms).sum()


@STRATEGIES.register("fedavg")
class FedAvgStrategy(Strategy):
    """Federated averaging over rounds.

    Args:
        rounds: number of rounds.
        local_epochs: epochs each site trains per round.
        weighting: ``"samples"`` (FedAvg: by training-sample count) or ``"equal"``.
        keep_local_norm: FedBN: normalisation layers stay at their site.
        min_sites: a round goes on while at least this many sites replied (default: all);
            a site that fails is logged with its name.
        test_every: test the global model on every site every this many rounds (and after
            the last one).
    """

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        weighting: Literal["samples", "equal"] = "samples",
        keep_local_norm: bool = False,
        min_sites: int | None = None,
        test_every: int = 1,
    ) -> None:
        for name, value in (("rounds", rounds), ("local_epochs", local_epochs), ("test_every", test_every)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if min_sites is not None and min_sites < 1:
            raise ValueError(f"min_sites must be at least 1, got {min_sites}")
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.weighting: Weighting = weighting
        self.keep_local_norm = keep_local_norm
        self.min_sites = min_sites
        self.test_every = test_every

    # -- the pieces a deployed federation runs too ---------------------------------------------

    def local_keys(self, runner: SiteRunner) -> set[str]:
        """Names of the weights that stay at each site (the normalisation layers under FedBN)."""
        if not self.keep_local_norm:
            return set()
        network = self.build_network(runner)
        return {
            f"{module_name}.{name}" if module_name else name
            for module_name, module in network.named_modules()
            if isinstance(module, NORM_TYPES)
            for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        }

    def site_start(self, global_weights: State, local_weights: State | None) -> State:
        """The weights a site starts a round from: the global ones, its own local ones over them."""
        return {**global_weights, **(local_weights or {})}

    def local_update(
        self, runner: SiteRunner, task: TaskConfig, start: State, round_number: int
    ) -> SiteUpdate:
        """Train one site for a round from ``start``."""
        weights = runner.fit(
            f"round{round_number}/{task.task_name}",
            [task],
            Carried(start),
            save_dir=None,
            epochs=self.local_epochs,
            seed_offset=1000 * round_number,
        )
        return SiteUpdate(task.task_name, weights, runner.site_record(task).num_samples)

    def aggregate(self, updates: Sequence[SiteUpdate], shared_keys: Sequence[str]) -> State:
        """The new global weights: the weighted average of the shared weights of ``updates``."""
        weights = site_weights([u.num_samples for u in updates], self.weighting)
        return weighted_average([u.weights for u in updates], weights, keys=shared_keys)

    def resume(self, runner: SiteRunner) -> Federation:
        """The federation after the last saved round, or before the first one (initial weights)."""
        saved = runner.load_state(ROUND_STATE)
        if saved is None:
            return Federation(0, runner.initial_state(runner.tasks[0]).weights)
        tensors, info = saved
        federation = Federation(info["round"], {k[len("global/"):]: v for k, v in tensors.items() if k.startswith("global/")})
        for key, tensor in tensors.items():
            if key.startswith("local/"):
                site, name = key[len("local/"):].split("/", 1)
                federation.local_weights.setdefault(site, {})[name] = tensor
        log.info("resuming the federation after round %d", federation.round)
        return federation

    def close_round(self, runner: SiteRunner, federation: Federation, updates: Sequence[SiteUpdate], round_number: int) -> None:
        """Aggregate the sites' ``updates`` of round ``round_number`` into ``federation`` and save
        it atomically (``ROUND_STATE``); fewer than ``min_sites`` updates stop the run."""
        required = self.min_sites or len(runner.tasks)
        if len(updates) < required:
            raise RuntimeError(
                f"round {round_number}: {len(updates)} of {len(runner.tasks)} sites replied, "
                f"fewer than min_sites={required}"
            )
        local_keys = self.local_keys(runner)
        shared_keys = [name for name in federation.global_weights if name not in local_keys]
        federation.global_weights = {**federation.global_weights, **self.aggregate(updates, shared_keys)}
        for update in updates:  # a simulated site's local weights (a deployed site keeps its own)
            local = {name: tensor for name, tensor in update.weights.items() if name in local_keys}
            if local:
                federation.local_weights[update.site] = local
        federation.round = round_number
        self._save(runner, federation)

    def tests_after(self, round_number: int) -> bool:
        """Whether the global model is tested after round ``round_number``."""
        return round_number % self.test_every == 0 or round_number == self.rounds

    # -- the simulated federation --------------------------------------------------------------

    def run(self, runner: SiteRunner) -> None:
        federation = self.resume(runner)
        if federation.round:  # resumed: the last saved round may have crashed before its test
            self._test(runner, federation)
        for round_number in range(federation.round + 1, self.rounds + 1):
            updates = []
            for task in runner.tasks:
                start = self.site_start(federation.global_weights, federation.local_weights.get(task.task_name))
                try:
                    updates.append(self.local_update(runner, task, start, round_number))
                except Exception:
                    log.exception("round %d: site %s failed", round_number, task.task_name)
            self.close_round(runner, federation, updates, round_number)
            self._test(runner, federation)

    def own_models(self, federation: Federation) -> dict[str, State]:
        """Each site's model: the global weights with the site's local ones over them."""
        return {site: self.site_start(federation.global_weights, local) for site, local in federation.local_weights.items()}

    def _test(self, runner: SiteRunner, federation: Federation) -> None:
        """Test the global model (each site with its own local weights) if this round is due."""
        if not self.tests_after(federation.round):
            return
        own = self.own_models(federation)
        runner.test(round_stage(federation.round), federation.global_weights, trained_site=None, site_weights=own or None)

    def _save(self, runner: SiteRunner, federation: Federation) -> None:
        tensors = {f"global/{k}": v for k, v in federation.global_weights.items()}
        for site, weights in federation.local_weights.items():
            tensors.update({f"local/{site}/{k}": v for k, v in weights.items()})
        runner.save_state(ROUND_STATE, tensors, {"round": federation.round})
        if federation.round == self.rounds:
            runner.save_final(
                round_stage(federation.round), federation.global_weights, save_dir="global", site_weights=self.own_models(federation) or None
            )


@STRATEGIES.register("fedprox")
class FedProxStrategy(FedAvgStrategy):
    """FedAvg with FedProx's proximal term ``mu / 2 * ||w - w_global||^2`` in every local step."""

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        weighting: Literal["samples", "equal"] = "samples",
        keep_local_norm: bool = False,
        min_sites: int | None = None,
        test_every: int = 1,
        mu: float = 0.01,
    ) -> None:
        super().__init__(rounds, local_epochs, weighting, keep_local_norm, min_sites, test_every)
        if mu < 0:
            raise ValueError(f"mu must be non-negative, got {mu}")
        self.mu = mu

    def make_learner(
        self, runner: SiteRunner, network: nn.Module, tasks: Sequence[TaskConfig], carried: Carried
    ) -> pl.LightningModule:
        return runner.learner(network, tasks[0].train, tasks=tasks, extra_losses=[ProximalTerm(carried.weights, self.mu)])


@STRATEGIES.register("ffl")
class FFLStrategy(FedAvgStrategy):
    """Flexible federated learning across sites whose label sets differ (after Tayebi Arasteh
    et al., Sci Rep 13:6046, 2023).

    The classifier (a ``trunk`` and a ``head`` over the union of all sites' labels) trains at
    every site on that site's own labels (masked BCE with ``pos_weight``). The server averages
    the trunk only, normalisation buffers included; every site keeps its head, of which it
    trains and is tested on its own labels' rows: one head per site's label set, which never
    leaves the site. ``shared_head`` averages the head too (the union-head variant: one head,
    masked BCE). ``fine_tune_epochs`` trains every site alone from the final global trunk and
    its own head after the rounds, tested as the row ``finetuned``.

    Args:
        rounds, local_epochs, min_sites, test_every: as for fedavg.
        weighting: ``"equal"`` (the paper's default) or ``"samples"``.
        shared_head: average the head as well.
        fine_tune_epochs: per-site fine-tuning after the rounds (0: none).
    """

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        weighting: Literal["samples", "equal"] = "equal",
        min_sites: int | None = None,
        test_every: int = 1,
        shared_head: bool = False,
        fine_tune_epochs: int = 0,
    ) -> None:
        super().__init__(rounds, local_epochs, weighting, False, min_sites, test_every)
        if fine_tune_epochs < 0:
            raise ValueError(f"fine_tune_epochs must be non-negative, got {fine_tune_epochs}")
        self.shared_head = shared_head
        self.fine_tune_epochs = fine_tune_epochs

    def local_keys(self, runner: SiteRunner) -> set[str]:
        if self.shared_head:
            return set()
        network = self.build_network(runner)
        keys = {name for name in network.state_dict() if name.startswith("head.")}
        if not keys:
            raise ValueError(f"ffl keeps the model's 'head' at each site, but {type(network).__name__} has none")
        return keys

    def run(self, runner: SiteRunner) -> None:
        super().run(runner)
        if not self.fine_tune_epochs:
            return
        federation = self.resume(runner)
        tuned = {
            task.task_name: runner.fit(
                f"finetune/{task.task_name}",
                [task],
                Carried(self.site_start(federation.global_weights, federation.local_weights.get(task.task_name))),
                save_dir=f"finetune/{task.save_dir}",
                epochs=self.fine_tune_epochs,
            )
            for task in runner.tasks
        }
        runner.test("finetuned", federation.global_weights, trained_site=None, site_weights=tuned)
