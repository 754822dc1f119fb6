"""fedavg: federated averaging, optionally with FedBN's site-local normalisation layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from siteflow.core.errors import OptionError
from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.models.norm_statistics import batch_norm_layers
from siteflow.strategies.federated.base import FederatedStrategy
from siteflow.strategies.federated.norm_statistics import NormStatistics, reestimated_statistics
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import LOCAL
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
        norm_statistics: With ``keep_local_norm``, the running statistics of a site's batch
            normalisation layers once the server has averaged the other weights:
            ``"reestimated"`` (the default under FedBN for a model with batch normalisation;
            instance, group and layer norm keep no statistics): the site measures them anew with the
            averaged weights on one pass over its own training batches, before it tests a
            round's model and before it trains the next round
            (:mod:`~siteflow.strategies.federated.norm_statistics`); ``"running"``: the
            running averages gathered while it trained, under its own weights before they
            were averaged (FedBN as published; they can leave a site whose images differ
            most almost unsegmented, issue 30). Refused without ``keep_local_norm``, and
            ``"reestimated"`` given for a model without batch normalisation.
        **kwargs: the options of :class:`FederatedStrategy` (rounds, local_epochs,
            weighting, min_sites, test_every, fraction, local_steps).
    """

    def __init__(self, keep_local_norm: bool = False, norm_statistics: NormStatistics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if norm_statistics is not None and not keep_local_norm:
            raise OptionError("norm_statistics", "chooses the statistics of FedBN's site-local normalisation layers: set keep_local_norm: true")
        self.keep_local_norm = keep_local_norm
        self.norm_statistics: NormStatistics | None = (norm_statistics or "reestimated") if keep_local_norm else None
        self.statistics_chosen = norm_statistics is not None  # a default finds nothing to do without batch norm

    def build_network(self, task: Task) -> nn.Module:
        """The model, once checked to have batch normalisation where ``norm_statistics:
        reestimated`` is given (the config's validation builds it: refused before any training)."""
        network = super().build_network(task)
        if self.statistics_chosen and self.norm_statistics == "reestimated" and not batch_norm_layers(network):
            raise OptionError(
                "norm_statistics",
                f"reestimated re-measures batch normalisation statistics, and {type(network).__name__} has no layer that keeps "
                "them (instance, group or layer norm normalise each sample by itself): set norm_statistics: running",
            )
        return network

    def site_start_weights(self, site: FederatedSite, global_weights: Weights, *, before: int) -> Weights:
        """The global weights with the site's kept layers over them; under
        ``norm_statistics: reestimated`` (once the site has kept layers), with the running
        statistics of those layers re-estimated on the site's training data."""
        weights = super().site_start_weights(site, global_weights, before=before)
        if self.norm_statistics != "reestimated" or not any(r < before for r in site.store.rounds(LOCAL)):
            return weights
        seed = 1000 * before + site.context.config.seed
        return reestimated_statistics(self.build_network(site.context.task), weights, site.site_run, seed=seed)

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
