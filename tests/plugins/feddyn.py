"""FedDyn (Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021) as a
siteflow plug-in: state at the server and at every site.

Site ``k`` keeps ``g_k`` (the gradient of its loss at its last local model; 0 at first) on its
own disk (the site store) and trains from the global weights ``x`` on its loss plus
``-<g_k, w> + alpha / 2 ||w - x||^2``; at the end ``y_k`` it keeps ``g_k - alpha (y_k - x)``
and sends only ``y_k``. The server keeps ``h`` (its state, saved with every round):
``h -= alpha / N * sum_k (y_k - x)`` over the ``N`` sites of the study, and the new global
weights are the average of the ``y_k`` minus ``h / alpha`` (the parameters; buffers are
averaged). One file, registered through the ``siteflow.plugins`` entry point; it changes no
siteflow module.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Tensors, Weights
from siteflow.strategies.federated import FedAvgStrategy, FederatedSite, ProximalTerm, SiteUpdate
from siteflow.tasks import ExtraLoss, Learner

H = "h/"


class Linear:
    """The extra loss ``-sum_p <p, g[p]>``."""

    def __init__(self, gradient: Tensors) -> None:
        self.gradient = gradient

    def __call__(self, learner: Learner) -> torch.Tensor:
        parameters = dict(learner.model.named_parameters())
        return -torch.stack([(parameters[name] * g.to(parameters[name])).sum() for name, g in self.gradient.items()]).sum()


@STRATEGIES.register("feddyn_plugin")
class FedDyn(FedAvgStrategy):
    """FedAvg with FedDyn's dynamic regulariser.

    Args:
        alpha: the regulariser's weight (positive; 0.01 to 0.1 in the paper).
        **kwargs: the options of fedavg.
    """

    aggregates_by_weighted_mean = False  # the server keeps h from every site's update

    def __init__(self, alpha: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.h: Tensors = {}
        self.parameters: list[str] = []
        self.num_sites = 0

    def prepare_server(self, network: nn.Module, sites: Sequence[str]) -> None:
        self.parameters = [name for name, _ in network.named_parameters()]
        self.num_sites = len(sites)

    def extra_losses(self, start: Weights) -> list[ExtraLoss]:
        return [ProximalTerm(start, self.alpha)]

    def site_step(self, site: FederatedSite, received: Weights, round_number: int) -> SiteUpdate:
        start = self.site_start_weights(site, received, before=round_number)
        with torch.device("meta"):
            names = [name for name, _ in self.build_network(site.context.task).named_parameters()]
        kept = site.store.load("feddyn", before=round_number) or {}
        gradient = {name: kept.get(name, torch.zeros_like(start[name])) for name in names}
        update = self.local_update(site, start, round_number, extra_losses=[Linear(gradient)])
        site.store.save("feddyn", round_number, {n: gradient[n] - self.alpha * (update.weights[n] - start[n]) for n in names})
        return update

    def aggregate(self, round_number: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        result = super().aggregate(round_number, global_weights, updates)
        for name in (name for name in self.parameters if name in updates[0].weights):  # FedBN's local layers are not
            drift = torch.stack([update.weights[name] - global_weights[name] for update in updates]).sum(0)
            self.h[name] = self.h.get(name, torch.zeros_like(drift)) - self.alpha / self.num_sites * drift
            result[name] = result[name] - self.h[name] / self.alpha
        return result

    def state_dict(self) -> dict[str, Any]:
        return {H + name: tensor for name, tensor in self.h.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.h = {k[len(H):]: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and k.startswith(H)}
