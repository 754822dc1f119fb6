"""joint: all sites' training data pooled in one run (the upper bound privacy forbids)."""

from __future__ import annotations

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteRunner, Strategy


@STRATEGIES.register("joint")
class JointStrategy(Strategy):
    """One model trained on the union of every current site's training split.

    The first site's ``train`` settings (epochs, batch size, ...) apply to the pooled run.
    """

    def __init__(self, save_dir: str = "joint") -> None:
        self.save_dir = save_dir

    def run(self, runner: SiteRunner) -> None:
        first = runner.tasks[0]
        weights = runner.fit("joint", runner.tasks, runner.initial_state(first), save_dir=self.save_dir)
        runner.test("joint", weights, trained_site=None)
