"""fedyogi: FedAvg with a Yogi server (Reddi et al., ICLR 2021)."""

from __future__ import annotations

from torch import Tensor

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.federated.fedadam import FedAdamStrategy


@STRATEGIES.register("fedyogi")
class FedYogiStrategy(FedAdamStrategy):
    """FedYogi: FedAdam whose second moment moves by at most ``(1 - beta2) delta^2`` a round,
    ``v = v - (1 - beta2) delta^2 sign(v - delta^2)``, so that it grows slowly when
    pseudo-gradients are rare and large.

    Args:
        **kwargs: the options of :class:`FedAdamStrategy` (server_lr, beta1, beta2, tau,
            initial_v) and of fedavg.
    """

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        square = delta.square()
        return v - (1 - self.beta2) * square * (v - square).sign()
