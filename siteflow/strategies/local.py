"""local: every site trains alone from the same initial weights; nothing moves between sites."""

from __future__ import annotations

from typing import Sequence

from siteflow.core.registry import STRATEGIES
from siteflow.core.site_matrix import StageResult, summarize
from siteflow.strategies.base import StudyContext, Strategy


@STRATEGIES.register("local")
class LocalStrategy(Strategy):
    """Each site trains its own model from the run's initial weights (the lower bound)."""

    def planned_stages(self, context: StudyContext) -> list[str]:
        return [task.task_name for task in context.tasks]

    def run(self, context: StudyContext) -> None:
        solver = self.solver_from(context.task)
        for task in context.tasks:
            start = context.start(task, lambda: self.build_network(context.task))
            weights = context.fit(task.task_name, [task], start.weights, self.trainee(context, [task], start), save_dir=task.save_dir)
            context.test(task.task_name, weights, solver, trained_site=task.task_name)

    def summarize(self, rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> dict:
        """Every site keeps its own model: a site's final value is that of the stage that
        trained it, and backward transfer does not apply."""
        return summarize(rows, site_names, metric, own_model_per_site=True)
