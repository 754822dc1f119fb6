"""fedadagrad: FedAvg with an Adagrad server (Reddi et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.federated.fedopt import AdaptiveServerOptimizer


@STRATEGIES.register("fedadagrad")
class FedAdagradStrategy(AdaptiveServerOptimizer):
    """FedAdagrad: ``v = v + delta^2``, the sum of every round's squared pseudo-gradient.

    Args:
        server_lr: the server's learning rate (positive).
        beta1: momentum of the pseudo-gradient, in [0, 1) (0: none, as Flower's).
        **kwargs: tau, initial_v (see :class:`AdaptiveServerOptimizer`) and the options of
            fedavg.
    """

    def __init__(self, server_lr: float = 0.1, beta1: float = 0.0, **kwargs: Any) -> None:
        super().__init__(server_lr=server_lr, beta1=beta1, **kwargs)

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        return v + delta.square()
