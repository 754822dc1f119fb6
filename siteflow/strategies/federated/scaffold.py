"""scaffold: FedAvg with control variates that correct the sites' drift (Karimireddy et al.,
"SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", ICML 2020)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from siteflow.config import TrainConfig
from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Tensors, Weights
from siteflow.strategies.base import SetupRefused
from siteflow.strategies.federated.base import SiteUpdate
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.strategies.federated.site import FederatedSite
from siteflow.tasks import Learner, Task

CONTROL = "control/"
"""The prefix of the control tensors in a message (the server's ``c``, a site's ``c_i+ - c_i``)."""
SITE_CONTROL = "control"
"""The name of a site's own control variate ``c_i`` in its store."""


def split(message: Mapping[str, torch.Tensor]) -> tuple[Weights, Tensors]:
    """(the model's weights, the control tensors by parameter name) of a message."""
    control = {name[len(CONTROL):]: tensor for name, tensor in message.items() if name.startswith(CONTROL)}
    return {name: tensor for name, tensor in message.items() if not name.startswith(CONTROL)}, control


class ControlCorrection:
    """The extra loss ``sum_p <p, c - c_i>`` over the controlled parameters: its gradient
    ``c - c_i`` corrects every local step. Sums the learning rates of the optimiser steps it
    is part of (``lr_sum``: ``K * lr`` for ``K`` steps at a constant ``lr``).

    Args:
        correction: ``c - c_i`` by parameter name, each of its parameter's shape.
    """

    def __init__(self, correction: Tensors) -> None:
        self.correction = correction
        self.lr_sum = 0.0

    def __call__(self, learner: Learner) -> torch.Tensor:
        trainer = learner.trainer
        self.lr_sum += trainer.optimizers[0].param_groups[0]["lr"] / trainer.accumulate_grad_batches
        parameters = dict(learner.model.named_parameters())
        terms = [(parameters[name] * difference.to(parameters[name])).sum() for name, difference in self.correction.items()]
        return torch.stack(terms).sum()


def new_site_control(own: Tensors, server: Tensors, start: Weights, end: Weights, lr_sum: float) -> Tensors:
    """SCAFFOLD's option II: ``c_i+ = c_i - c + (x - y) / (K lr)`` for every parameter of
    ``own`` (``c_i``), from the server's ``c``, the round's start ``x`` and end ``y`` and
    ``K lr`` (``lr_sum``)."""
    return {name: own[name] - server[name] + (start[name] - end[name]) / lr_sum for name in own}


@STRATEGIES.register("scaffold")
class ScaffoldStrategy(FedAvgStrategy):
    """SCAFFOLD: the server keeps a control variate ``c`` and sends it with the global weights
    ``x``; every site keeps its own ``c_i`` on its own disk (its store; it never leaves the
    site) and corrects the gradient of every local step by ``c - c_i``. After ``K`` local SGD
    steps at learning rate ``lr`` from ``x`` to ``y``, the site sets ``c_i+ = c_i - c +
    (x - y) / (K lr)`` and sends ``y`` with ``c_i+ - c_i``; the server averages the weights as
    FedAvg does and sets ``c += (1/N) sum_i (c_i+ - c_i)`` over the ``N`` sites of the study
    (with client sampling, only the sampled ones send). ``c`` is saved with every round; both
    come back after a kill. Control variates cover the model's parameters (not buffers, not
    FedBN's local layers) and assume plain SGD (``common.train.optimizer``: ``SGD`` without
    momentum, no ``gradient_clip_val``; a learning-rate schedule is followed step by step).

    Args:
        **kwargs: the options of fedavg (rounds, local_epochs or local_steps, weighting,
            keep_local_norm, fraction, ...).
    """

    aggregates_by_weighted_mean = False  # the server sums control variates over all sites

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.control: Tensors = {}
        self.num_sites: int | None = None

    def prepare_server(self, network: nn.Module, sites: Sequence[str]) -> None:
        self.num_sites = len(sites)

    def configure(self, round_number: int, global_weights: Weights) -> Weights:
        """The global weights and the server's control variate (none before the first round)."""
        return {**global_weights, **{CONTROL + name: tensor for name, tensor in self.control.items()}}

    def received_global_weights(self, received: Weights) -> Weights:
        """The global weights without the server's control variate."""
        return split(received)[0]

    def controlled(self, task: Task) -> list[str]:
        """The names of the parameters with control variates: the shared ones."""
        with torch.device("meta"):
            names = [name for name, _ in self.build_network(task).named_parameters()]
        local = self.local_keys(task)
        return [name for name in names if name not in local]

    def site_step(self, site: FederatedSite, received: Weights, round_number: int) -> SiteUpdate:
        """Train with the corrected steps; keep ``c_i+``, send the weights and ``c_i+ - c_i``."""
        check_plain_steps(site.site_run.train)
        weights, server = split(received)
        start = self.site_start_weights(site, weights, before=round_number)
        kept = site.store.load(SITE_CONTROL, before=round_number) or {}
        names = self.controlled(site.context.task)
        server = {name: server[name] if name in server else torch.zeros_like(start[name]) for name in names}
        own = {name: kept[name] if name in kept else torch.zeros_like(start[name]) for name in names}
        correction = ControlCorrection({name: server[name] - own[name] for name in names})
        update = self.local_update(site, start, round_number, extra_losses=[correction])
        new_own = new_site_control(own, server, start, update.weights, correction.lr_sum)
        site.store.save(SITE_CONTROL, round_number, new_own)
        deltas = {CONTROL + name: new_own[name] - own[name] for name in names}
        return SiteUpdate(update.site, {**update.weights, **deltas}, update.num_samples)

    def aggregate(self, round_number: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        """FedAvg (or the ``robust`` rule) of the weights; ``c`` moves by :meth:`control_step`."""
        if self.num_sites is None:
            raise RuntimeError("ScaffoldStrategy.aggregate before prepare_server: the number of sites is unknown")
        parts = [split(update.weights) for update in updates]
        step = self.control_step(round_number, [update.site for update in updates], [deltas for _, deltas in parts])
        for name, change in step.items():
            self.control[name] = self.control.get(name, torch.zeros_like(change)) + change
        model_updates = [SiteUpdate(update.site, weights, update.num_samples) for update, (weights, _) in zip(updates, parts)]
        return super().aggregate(round_number, global_weights, model_updates)

    def control_step(self, round_number: int, sites: Sequence[str], deltas: Sequence[Weights]) -> Weights:
        """The server variate's change from the replying ``sites``' deltas ``c_i+ - c_i``:
        ``(1/N) sum of the deltas`` over all ``N`` sites; under ``robust``, the rule's aggregate
        of the deltas (every site counted alike, from zero) times the replying share of the
        sites, so that one site cannot steer the correction every site's steps follow."""
        if self.robust is None:
            return {name: torch.stack([delta[name] for delta in deltas]).sum(0) / self.num_sites for name in deltas[0]}
        zeros = {name: torch.zeros_like(tensor) for name, tensor in deltas[0].items()}
        combined = self.robust.combine(round_number, sites, deltas, [1 / len(deltas)] * len(deltas), zeros)
        return {name: value * (len(deltas) / self.num_sites) for name, value in combined.items()}

    def state_dict(self) -> dict[str, Any]:
        return {CONTROL + name: tensor for name, tensor in self.control.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.control = {name[len(CONTROL):]: tensor.clone() for name, tensor in state.items() if name.startswith(CONTROL)}


def check_plain_steps(train: TrainConfig) -> None:
    """Refuse what makes a local step other than ``-lr (g + c - c_i)``, which SCAFFOLD's
    variates assume: an optimiser other than SGD without momentum, and gradient clipping
    (it would clip the correction ``c - c_i`` with the gradient, and option II's
    ``(x - y) / (K lr)`` would then estimate the clipped mean step, not the site's gradient)."""
    optimizer = train.optimizer
    if optimizer.name != "SGD" or optimizer.kwargs.get("momentum", 0) or optimizer.kwargs.get("nesterov", False):
        raise SetupRefused(
            f"scaffold corrects plain SGD steps and estimates its control variates from them: set "
            f"common.train.optimizer to SGD without momentum (it is {optimizer.name} with {optimizer.kwargs})"
        )
    if train.gradient_clip_val is not None:
        raise SetupRefused(
            f"scaffold estimates its control variates from unclipped SGD steps: set common.train.gradient_clip_val "
            f"to null (it is {train.gradient_clip_val}); clipping would also clip the drift correction"
        )
