"""fedavg: federated averaging, optionally with FedBN's site-local normalisation layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.federated.base import FederatedStrategy
from siteflow.tasks import Task

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@STRATEGIES.register("fedavg")
class FedAvgStrategy(FederatedStrategy):
    """Federated averaging over rounds (McMahan et al. 2017): every round, each site trains
    ``local_epochs`` from the global weights on its own data; the server averages them (by
    training-sample count, or equally).

    Args:
        keep_local_norm: FedBN (Li et al. 2021): the normalisation layers (batch, instance,
            group and layer norm: their affine weights and running statistics) stay at their
            site, neither averaged nor sent; each site is tested with its own.
        **kwargs: the options of :class:`FederatedStrategy` (rounds, local_epochs,
            weighting, min_sites, test_every, fraction, local_steps).
    """

    def __init__(self, keep_local_norm: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_local_norm = keep_local_norm

    def local_keys(self, task: Task) -> set[str]:
        """The normalisation layers' weights and buffers under FedBN, else none."""
        if not self.keep_local_norm:
            return set()
        network = self.build_network(task)
        return {
            f"{module_name}.{name}" if module_name else name
            for module_name, module in network.named_modules()
            if isinstance(module, NORM_TYPES)
            for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        }
