"""The base class of the federated strategies: the round API
(:class:`~siteflow.strategies.federated.rounds.FederatedRounds`) run by its in-process
driver (:func:`~siteflow.strategies.federated.simulation.simulate`). The round API sits below
its drivers, so that the drivers and :class:`~siteflow.strategies.federated.federation.Federation`
depend on it and it depends on none of them."""

from __future__ import annotations

from siteflow.strategies.base import StudyContext
from siteflow.strategies.federated.rounds import FederatedRounds, SiteUpdate
from siteflow.strategies.federated.simulation import simulate

__all__ = ["FederatedStrategy", "SiteUpdate"]


class FederatedStrategy(FederatedRounds):
    """Base of the federated strategies: rounds of local training and aggregation (see
    :class:`~siteflow.strategies.federated.rounds.FederatedRounds` for the round API and its
    options)."""

    def run(self, context: StudyContext) -> None:
        """The rounds simulated in this process (``siteflow.deploy.flower`` deploys them)."""
        simulate(self, context)
