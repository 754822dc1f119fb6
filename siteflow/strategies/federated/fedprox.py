"""fedprox: FedAvg with a proximal term that keeps local training near the global weights."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.strategies.federated.fedavg import FedAvgStrategy
from siteflow.tasks import ExtraLoss, Learner


class ProximalTerm:
    """FedProx's ``mu / 2 * sum ||w - w_global||^2`` over the trainable parameters."""

    def __init__(self, anchor: Mapping[str, torch.Tensor], mu: float) -> None:
        self.anchor = dict(anchor)
        self.mu = mu

    def __call__(self, learner: Learner) -> torch.Tensor:
        terms = [
            (parameter - self.anchor[name].to(parameter.device, parameter.dtype)).pow(2).sum()
            for name, parameter in learner.model.named_parameters()
            if parameter.requires_grad
        ]
        return 0.5 * self.mu * torch.stack(terms).sum()


@STRATEGIES.register("fedprox")
class FedProxStrategy(FedAvgStrategy):
    """FedAvg with FedProx's proximal term (Li et al. 2020) in every local step.

    Args:
        mu: weight of ``mu / 2 * ||w - w_global||^2``.
        **kwargs: the options of :class:`FedAvgStrategy`.
    """

    def __init__(self, mu: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mu < 0:
            raise ValueError(f"mu must be non-negative, got {mu}")
        self.mu = mu

    def extra_losses(self, start: Weights) -> list[ExtraLoss]:
        return [ProximalTerm(start, self.mu)]
