"""FedAvg that logs every round's aggregation, as a siteflow plug-in.

Its ``aggregate`` only logs and calls its parent's, so its server still needs no more than the
weighted mean of the sites' updates: it inherits FedAvg's declaration
(``aggregates_by_weighted_mean``), and secure aggregation (SecAgg+) accepts it whatever its
name. One file, registered through the ``siteflow.plugins`` entry point.
"""

from __future__ import annotations

import logging
from typing import Sequence

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.strategies.federated import FedAvgStrategy, SiteUpdate

log = logging.getLogger(__name__)


@STRATEGIES.register("logging_fedavg_plugin")
class LoggingFedAvg(FedAvgStrategy):
    """FedAvg, logging the sites of every round it aggregates (FedAvg's options)."""

    def aggregate(self, round_number: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        log.info("round %d: averaging %s", round_number, ", ".join(update.site for update in updates))
        return super().aggregate(round_number, global_weights, updates)
