"""FedAMSGrad as a siteflow plug-in: a server optimiser built on siteflow's shared base.

FedAdam whose denominator never shrinks (AMSGrad, Reddi et al., ICLR 2018; FedAMS, Wang et
al., ICML 2022): the server keeps ``v_max = max(v_max, v)`` beside Adam's ``m`` and ``v`` and
steps ``x += server_lr m / (sqrt(v_max) + tau)``. Its three buffers are the strategy's state
(``state_dict``), saved with every round and restored on resume by the base class.
One file, registered through the ``siteflow.plugins`` entry point; it changes no siteflow module.
"""

from __future__ import annotations

import torch
from torch import Tensor

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Tensors
from siteflow.strategies.federated import FedAdamStrategy


@STRATEGIES.register("fedamsgrad_plugin")
class FedAMSGrad(FedAdamStrategy):
    """FedAdam with AMSGrad's running maximum of the second moment (options: fedadam's)."""

    def initial_state(self, weight: Tensor) -> Tensors:
        return {**super().initial_state(weight), "v_max": torch.full_like(weight, self.initial_v)}

    def step(self, delta: Tensor, state: Tensors) -> Tensor:
        state["m"] = self.beta1 * state["m"] + (1 - self.beta1) * delta
        state["v"] = self.second_moment(state["v"], delta)
        state["v_max"] = torch.maximum(state["v_max"], state["v"])
        return self.server_lr * state["m"] / (state["v_max"].sqrt() + self.tau)
