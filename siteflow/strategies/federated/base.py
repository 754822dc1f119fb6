"""The base class of the federated strategies: the round API
(:class:`~siteflow.strategies.federated.rounds.FederatedRounds`) run by its in-process
driver (:func:`~siteflow.strategies.federated.simulation.simulate`). The round API sits below
its drivers, so that the drivers and :class:`~siteflow.strategies.federated.federation.Federation`
depend on it and it depends on none of them."""

from __future__ import annotations

from siteflow.config import ExperimentConfig
from siteflow.core.errors import OptionError
from siteflow.strategies.base import SiteTraining, StudyContext
from siteflow.strategies.federated.federation import round_stage
from siteflow.strategies.federated.rounds import FederatedRounds, SiteUpdate
from siteflow.strategies.federated.simulation import simulate

__all__ = ["FederatedStrategy", "SiteUpdate"]


class FederatedStrategy(FederatedRounds):
    """Base of the federated strategies: rounds of local training and aggregation (see
    :class:`~siteflow.strategies.federated.rounds.FederatedRounds` for the round API and its
    options). Its aggregation, the weighted mean of the sites' updates, is what SecAgg+ can
    compute: a subclass whose server needs more (SCAFFOLD's sums of control variates, a robust
    rule that sees every update) declares ``aggregates_by_weighted_mean = False``."""

    aggregates_by_weighted_mean = True

    def site_visits(self) -> int:
        """Each site trains once a round, and once more when the strategy finishes (FFL's
        fine-tuning)."""
        return self.rounds + int(self.finishes)

    def check_fits(self, config: ExperimentConfig) -> None:
        """``min_sites`` is at most the sites that train (in a deployed run: the study's)."""
        sites = len(config.sites) if config.deployed else len(config.site_runs)
        if self.min_sites is not None and self.min_sites > sites:
            raise OptionError("min_sites", f"is {self.min_sites}, but the study trains only {sites} sites")

    def planned_stages(self, context: SiteTraining) -> list[str]:
        """Every round's sampled sites, ``round<r>/<site>`` (a further step in a round or
        after the rounds counts as part of the stage before it)."""
        names = [site_run.task_name for site_run in context.site_runs]
        return [f"{round_stage(r)}/{site}" for r in range(1, self.rounds + 1) for site in self.sample_sites(r, names, seed=context.config.seed)]

    def run(self, context: StudyContext) -> None:
        """The rounds simulated in this process (``siteflow.deploy.flower`` deploys them)."""
        simulate(self, context)
