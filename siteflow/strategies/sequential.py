"""sequential: fine-tune site after site; with ``cycles > 1``, cyclic weight transfer."""

from __future__ import annotations

from siteflow.config import SiteRun
from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteInput, SiteTraining, Strategy, StudyContext


@STRATEGIES.register("sequential")
class SequentialStrategy(Strategy):
    """Site ``k`` starts from site ``k-1``'s final weights; the order repeats ``cycles`` times.

    After every site the weights and the chain of sites so far are written as a hand-over
    file, which a deployed next site names in its ``checkpoint.load``; the chain says where
    in the relay order a received file stands (its cycle too). The first site starts from its
    ``checkpoint.load`` file if one is set, else from the run's initial weights.

    Args:
        cycles: passes over the site order.
    """

    def __init__(self, cycles: int = 1) -> None:
        if cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {cycles}")
        self.cycles = cycles

    def site_visits(self) -> int:
        """Each site trains once per cycle."""
        return self.cycles

    def relay_order(self, context: SiteTraining) -> list[int]:
        """The task ids in the order the model visits them, every cycle."""
        return [site.task_id for site in context.config.sites] * self.cycles

    def stages(self, context: SiteTraining) -> list[tuple[str, str, SiteRun]]:
        """(stage name, checkpoint folder, site) of every visit of this run, in order."""
        if self.cycles == 1:
            return [(site_run.task_name, site_run.save_dir, site_run) for site_run in context.site_runs]
        return [
            (f"cycle{cycle}/{site_run.task_name}", f"cycle{cycle}/{site_run.save_dir}", site_run)
            for cycle in range(1, self.cycles + 1)
            for site_run in context.site_runs
        ]

    def planned_stages(self, context: SiteTraining) -> list[str]:
        return [stage for stage, _, _ in self.stages(context)]

    def run(self, context: StudyContext) -> None:
        solver = self.solver_from(context.task)
        carried = context.start(context.site_runs[0], lambda: self.build_network(context.task), site_order=self.relay_order(context))
        for stage, save_dir, site_run in self.stages(context):
            weights = context.fit(stage, [site_run], carried.weights, self.trainee(context, [site_run], carried), save_dir=save_dir)
            carried = SiteInput(weights, carried.sites + (context.site_record(site_run),))
            context.hand_over(carried, save_dir=save_dir)
            context.test(stage, weights, solver, trained_site=site_run.task_name)
