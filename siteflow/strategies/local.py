"""local: every site trains alone from the same initial weights; nothing moves between sites."""

from __future__ import annotations

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteRunner, Strategy


@STRATEGIES.register("local")
class LocalStrategy(Strategy):
    """Each site trains its own model from the run's initial weights (the lower bound)."""

    own_model_per_site = True

    def run(self, runner: SiteRunner) -> None:
        for task in runner.tasks:
            weights = runner.fit(task.task_name, [task], runner.initial_state(task), save_dir=task.save_dir)
            runner.test(task.task_name, weights, trained_site=task.task_name)
