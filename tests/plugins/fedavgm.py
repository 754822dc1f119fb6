"""FedAvgM (Hsu et al., 2019) as a siteflow plug-in: FedAvg with server momentum.

The server treats ``global - average`` as a pseudo-gradient and steps with momentum:
``v <- momentum * v + (global - average)``, ``global <- global - server_lr * v``. The
momentum buffer is the strategy's state: saved with every round, restored on resume.
One file, registered through the ``siteflow.plugins`` entry point; it changes no siteflow module.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import State
from siteflow.strategies.federated import FedAvgStrategy, SiteUpdate

MOMENTUM = "momentum/"


@STRATEGIES.register("fedavgm_plugin")
class FedAvgM(FedAvgStrategy):
    """FedAvg with server momentum.

    Args:
        server_lr: the server's step size (1 with momentum 0 is FedAvg).
        momentum: the server momentum (0.9 in the paper's experiments).
        **kwargs: the options of fedavg.
    """

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if server_lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"server_lr must be positive and momentum in [0, 1), got {server_lr}, {momentum}")
        self.server_lr = server_lr
        self.momentum = momentum
        self.velocity: State = {}

    def aggregate(self, round_number: int, global_weights: State, updates: Sequence[SiteUpdate]) -> State:
        average = super().aggregate(round_number, global_weights, updates)
        result = dict(average)
        for name, mean in average.items():
            if not mean.is_floating_point():
                continue  # integer buffers (batch counters) take the average's value
            step = global_weights[name] - mean
            if name in self.velocity:
                step = self.momentum * self.velocity[name] + step
            self.velocity[name] = step
            result[name] = global_weights[name] - self.server_lr * step
        return result

    def state_dict(self) -> dict[str, Any]:
        return {MOMENTUM + name: tensor for name, tensor in self.velocity.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.velocity = {k[len(MOMENTUM):]: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor) and k.startswith(MOMENTUM)}
