"""fedadam: FedAvg with an Adam server (Reddi et al., ICLR 2021)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.federated.fedopt import AdaptiveServerOptimizer, check_unit_interval


@STRATEGIES.register("fedadam")
class FedAdamStrategy(AdaptiveServerOptimizer):
    """FedAdam: ``v = beta2 v + (1 - beta2) delta^2`` (without Adam's bias correction, as in
    the paper).

    Args:
        server_lr: the server's learning rate (positive).
        beta2: decay of the second moment, in [0, 1).
        **kwargs: beta1, tau, initial_v (see :class:`AdaptiveServerOptimizer`) and the
            options of fedavg.
    """

    def __init__(self, server_lr: float = 0.01, beta2: float = 0.99, **kwargs: Any) -> None:
        super().__init__(server_lr=server_lr, **kwargs)
        check_unit_interval("beta2", beta2)
        self.beta2 = beta2

    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta.square()
