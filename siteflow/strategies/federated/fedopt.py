"""The server optimisers' shared base: FedAvg whose server steps along a pseudo-gradient.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2): every round, the
sites train from the global weights ``x`` as in FedAvg; the server takes the average of what
they sent minus ``x`` as a pseudo-gradient ``delta`` and hands it to an optimiser of its own
(momentum, Adam, Yogi, Adagrad), whose buffers are the strategy's state: saved with every
round, restored on resume. One strategy per file: ``fedavgm``, ``fedadam``, ``fedyogi``,
``fedadagrad``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from siteflow.core.types import Tensors, Weights
from siteflow.strategies.federated.base import SiteUpdate
from siteflow.strategies.federated.fedavg import FedAvgStrategy


class ServerOptimizer(FedAvgStrategy):
    """FedAvg whose server moves the global weights by an optimiser step.

    Only the model's parameters that the sites send are stepped; buffers (BatchNorm's running
    statistics, which the step could push out of their range, and the integer
    ``num_batches_tracked``) and what no site sends take FedAvg's value, and FedBN's local
    layers stay at the sites. A subclass names its buffers in :meth:`initial_state` and writes
    one tensor's step in :meth:`step`.

    Args:
        server_lr: the server's learning rate (positive).
        **kwargs: the options of fedavg (rounds, local_epochs, keep_local_norm, ...).
    """

    def __init__(self, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not server_lr > 0:
            raise ValueError(f"server_lr must be positive, got {server_lr}")
        self.server_lr = server_lr
        self.stepped: set[str] | None = None
        self.buffers: dict[str, Tensors] = {}  # buffer name -> weight name -> tensor

    def prepare_server(self, network: nn.Module, sites: Sequence[str]) -> None:
        """Remember which weights are parameters (the ones the server steps)."""
        self.stepped = {name for name, _ in network.named_parameters()}

    def aggregate(self, round_number: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        """FedAvg's average, then ``x + step(average - x)`` for every parameter the sites sent."""
        if self.stepped is None:
            raise RuntimeError(f"{type(self).__name__}.aggregate before prepare_server: which weights are parameters is unknown")
        result = super().aggregate(round_number, global_weights, updates)
        for name in self.stepped & set(updates[0].weights):
            x = global_weights[name]
            state = {buffer: tensors[name] for buffer, tensors in self.buffers.items() if name in tensors}
            state = state or self.initial_state(x.float())
            update = self.step(result[name].float() - x.float(), state)
            for buffer, tensor in state.items():
                self.buffers.setdefault(buffer, {})[name] = tensor
            result[name] = (x.float() + update).to(x.dtype)
        return result

    @abstractmethod
    def initial_state(self, weight: Tensor) -> Tensors:
        """The optimiser's buffers for one weight before its first step (float32 tensors of
        the weight's shape, by buffer name)."""

    @abstractmethod
    def step(self, delta: Tensor, state: Tensors) -> Tensor:
        """The server's update of one weight from its pseudo-gradient ``delta`` (the average
        minus the global weight, float32 of the weight's shape); replaces the buffers in
        ``state`` by their new values."""

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's buffers, ``"<buffer>/<weight name>"``."""
        return {f"{buffer}/{name}": tensor for buffer, tensors in self.buffers.items() for name, tensor in tensors.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.buffers = {}
        for key, tensor in state.items():
            buffer, _, name = key.partition("/")
            self.buffers.setdefault(buffer, {})[name] = tensor.clone()


class AdaptiveServerOptimizer(ServerOptimizer):
    """FedOpt (Reddi et al. 2021, Algorithm 2): ``m = beta1 m + (1 - beta1) delta``, ``v`` by
    the subclass's rule (:meth:`second_moment`), ``x += server_lr m / (sqrt(v) + tau)``.

    Args:
        beta1: momentum of the pseudo-gradient, in [0, 1).
        tau: the adaptivity (positive): the smaller, the more adaptive.
        initial_v: ``v`` before the first round (non-negative; default ``tau ** 2``, the
            paper's ``v_{-1} >= tau^2``; Flower and FLamby start from 0).
        **kwargs: the options of :class:`ServerOptimizer` (server_lr) and of fedavg.
    """

    def __init__(self, beta1: float = 0.9, tau: float = 1e-3, initial_v: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_unit_interval("beta1", beta1)
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if initial_v is not None and not initial_v >= 0:
            raise ValueError(f"initial_v must be non-negative, got {initial_v}")
        self.beta1 = beta1
        self.tau = tau
        self.initial_v = tau**2 if initial_v is None else initial_v

    def initial_state(self, weight: Tensor) -> Tensors:
        return {"m": torch.zeros_like(weight), "v": torch.full_like(weight, self.initial_v)}

    def step(self, delta: Tensor, state: Tensors) -> Tensor:
        state["m"] = self.beta1 * state["m"] + (1 - self.beta1) * delta
        state["v"] = self.second_moment(state["v"], delta)
        return self.server_lr * state["m"] / (state["v"].sqrt() + self.tau)

    @abstractmethod
    def second_moment(self, v: Tensor, delta: Tensor) -> Tensor:
        """The new ``v`` from the last one and the pseudo-gradient (same shapes)."""


def check_unit_interval(name: str, value: float) -> None:
    """Refuse a decay rate outside [0, 1)."""
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
