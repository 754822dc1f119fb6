"""SCAFFOLD (Karimireddy et al., ICML 2020) as a siteflow plug-in: control variates.

The server keeps a control variate ``c`` and sends it with the global weights ``x``; every
site keeps its own ``c_i`` on its own disk (the site store) and corrects each local step's
gradient by ``c - c_i`` (as the extra loss term ``<w, c - c_i>``, whose gradient that is).
After ``K`` local steps at learning rate ``lr`` from ``x`` to ``y`` the site updates
``c_i+ = c_i - c + (x - y) / (K lr)`` (the paper's option II) and sends ``y`` with
``c_i+ - c_i``; the server averages the weights as FedAvg does and adds the mean control
difference to ``c`` (every site takes part in every round). ``c`` is the strategy's state,
saved with every round; ``c_i`` survives in the site store: both come back after a kill.
One file, registered through the ``siteflow.plugins`` entry point; it changes no siteflow module.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import State
from siteflow.strategies.federated import FedAvgStrategy, FederatedSite, SiteUpdate
from siteflow.tasks import Learner

CONTROL = "control/"


def split(weights: Mapping[str, torch.Tensor]) -> tuple[State, State]:
    """(model weights, control tensors by parameter name) of a message."""
    control = {k[len(CONTROL):]: v for k, v in weights.items() if k.startswith(CONTROL)}
    return {k: v for k, v in weights.items() if not k.startswith(CONTROL)}, control


class Correction:
    """The extra loss ``sum_p <p, c - c_i>``; counts the local steps it is called in."""

    def __init__(self, server: State, own: State) -> None:
        self.server, self.own = server, own
        self.steps = 0
        self.names: list[str] = []

    def __call__(self, learner: Learner) -> torch.Tensor:
        self.steps += 1
        parameters = dict(learner.model.named_parameters())
        self.names = list(parameters)
        total = torch.zeros((), device=learner.device)
        for name in set(self.server) | set(self.own):
            parameter = parameters[name]
            difference = self.server.get(name, torch.zeros(())) - self.own.get(name, torch.zeros(()))
            total = total + (parameter * difference.to(parameter)).sum()
        return total


@STRATEGIES.register("scaffold_plugin")
class Scaffold(FedAvgStrategy):
    """FedAvg with SCAFFOLD's control variates (options: those of fedavg)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.control: State = {}

    def configure(self, round_number: int, global_weights: State) -> State:
        return {**global_weights, **{CONTROL + k: v for k, v in self.control.items()}}

    def site_step(self, site: FederatedSite, received: State, round_number: int) -> SiteUpdate:
        weights, server = split(received)
        start = self.site_weights(site, weights, before=round_number)
        own = site.store.load("control", before=round_number) or {}
        correction = Correction(server, own)
        update = self.local_update(site, start, round_number, extra_losses=[correction])
        lr = float(site.task.train.optimizer.kwargs.get("lr", 1e-3))
        new_own, deltas = {}, {}
        for name in correction.names:
            before = own.get(name, torch.zeros_like(start[name]))
            new_own[name] = before - server.get(name, torch.zeros_like(before)) + (start[name] - update.weights[name]) / (correction.steps * lr)
            deltas[CONTROL + name] = new_own[name] - before
        site.store.save("control", round_number, new_own)
        return SiteUpdate(update.site, {**update.weights, **deltas}, update.num_samples)

    def aggregate(self, round_number: int, global_weights: State, updates: Sequence[SiteUpdate]) -> State:
        parts = [split(update.weights) for update in updates]
        model_updates = [SiteUpdate(u.site, weights, u.num_samples) for u, (weights, _) in zip(updates, parts)]
        for name in parts[0][1]:
            mean = torch.stack([control[name] for _, control in parts]).mean(0)
            self.control[name] = self.control.get(name, torch.zeros_like(mean)) + mean
        return super().aggregate(round_number, global_weights, model_updates)

    def state_dict(self) -> dict[str, Any]:
        return {CONTROL + k: v for k, v in self.control.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.control = {k[len(CONTROL):]: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and k.startswith(CONTROL)}
