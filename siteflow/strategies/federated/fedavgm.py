"""fedavgm: FedAvg with server momentum (Hsu et al., 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Tensors
from siteflow.strategies.federated.fedopt import ServerOptimizer, check_unit_interval


@STRATEGIES.register("fedavgm")
class FedAvgMStrategy(ServerOptimizer):
    """FedAvg with server momentum: ``m = momentum m + delta``, ``x += server_lr m`` with the
    pseudo-gradient ``delta = average - x`` (Flower's ``FedAvgM``); ``server_lr=1`` with
    ``momentum=0`` is FedAvg.

    Args:
        momentum: the server momentum, in [0, 1) (0.9 in the paper's experiments).
        **kwargs: server_lr (default 1) and the options of fedavg.
    """

    def __init__(self, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_unit_interval("momentum", momentum)
        self.momentum = momentum

    def initial_state(self, weight: Tensor) -> Tensors:
        return {"m": torch.zeros_like(weight)}

    def step(self, delta: Tensor, state: Tensors) -> Tensor:
        state["m"] = self.momentum * state["m"] + delta
        return self.server_lr * state["m"]
