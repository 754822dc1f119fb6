"""local: every site trains alone from the same initial weights; nothing moves between sites."""

from __future__ import annotations

from typing import Sequence

from siteflow.core.registry import STRATEGIES
from siteflow.core.site_matrix import StageResult, summarize
from siteflow.strategies.base import SiteTraining, Strategy, StudyContext


@STRATEGIES.register("local")
class LocalStrategy(Strategy):
    """Each site trains its own model from the run's initial weights (the lower bound)."""

    def planned_stages(self, context: SiteTraining) -> list[str]:
        return [site_run.task_name for site_run in context.site_runs]

    def run(self, context: StudyContext) -> None:
        solver = self.solver_from(context.task)
        for site_run in context.site_runs:
            start = context.start(site_run, lambda: self.build_network(context.task))
            weights = context.fit(site_run.task_name, [site_run], start.weights, self.trainee(context, [site_run], start), save_dir=site_run.save_dir)
            context.test(site_run.task_name, weights, solver, trained_site=site_run.task_name)

    def summarize(self, rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> dict:
        """Every site keeps its own model: a site's final value is that of the stage that
        trained it, and backward transfer does not apply."""
        return summarize(rows, site_names, metric, own_model_per_site=True)
