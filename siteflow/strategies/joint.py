"""joint: all sites' training data pooled in one run (the upper bound privacy forbids)."""

from __future__ import annotations

from siteflow.config import ExperimentConfig
from siteflow.config.folders import checkpoint_folder
from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import SiteTraining, Strategy, StudyContext


@STRATEGIES.register("joint")
class JointStrategy(Strategy):
    """One model trained on the union of every current site's training split.

    The first site's ``train`` settings (epochs, batch size, ...) apply to the pooled run.

    Args:
        save_dir: the checkpoint folder of the pooled run.
    """

    def __init__(self, save_dir: str = "joint") -> None:
        self.save_dir = save_dir

    def check_fits(self, config: ExperimentConfig) -> None:
        """``save_dir`` must be a folder under the run's ``checkpoints/``."""
        checkpoint_folder(self.save_dir, "common.strategy.kwargs.save_dir")

    def planned_stages(self, context: SiteTraining) -> list[str]:
        return ["joint"]

    def run(self, context: StudyContext) -> None:
        start = context.start(context.site_runs[0], lambda: self.build_network(context.task))
        trainee = self.trainee(context, context.site_runs, start)
        weights = context.fit("joint", context.site_runs, start.weights, trainee, save_dir=self.save_dir)
        context.test("joint", weights, self.solver_from(context.task), trained_site=None)
