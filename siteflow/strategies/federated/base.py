"""The base class of the federated strategies: the round API
(:class:`~siteflow.strategies.federated.rounds.FederatedRounds`) run by its in-process
driver (:func:`~siteflow.strategies.federated.simulation.simulate`). The round API sits below
its drivers, so that the drivers and :class:`~siteflow.strategies.federated.federation.Federation`
depend on it and it depends on none of them."""

from __future__ import annotations

from siteflow.strategies.base import StudyContext
from siteflow.strategies.federated.federation import round_stage
from siteflow.strategies.federated.rounds import FederatedRounds, SiteUpdate
from siteflow.strategies.federated.simulation import simulate

__all__ = ["FederatedStrategy", "SiteUpdate"]


class FederatedStrategy(FederatedRounds):
    """Base of the federated strategies: rounds of local training and aggregation (see
    :class:`~siteflow.strategies.federated.rounds.FederatedRounds` for the round API and its
    options)."""

    def planned_stages(self, context: StudyContext) -> list[str]:
        """Every round's sampled sites, ``round<r>/<site>`` (a further step in a round or
        after the rounds counts as part of the stage before it)."""
        names = [task.task_name for task in context.tasks]
        return [f"{round_stage(r)}/{site}" for r in range(1, self.rounds + 1) for site in self.sample_sites(r, names, seed=context.config.seed)]

    def run(self, context: StudyContext) -> None:
        """The rounds simulated in this process (``siteflow.deploy.flower`` deploys them)."""
        simulate(self, context)
