"""sequential: fine-tune site after site; with ``cycles > 1``, cyclic weight transfer."""

from __future__ import annotations

from siteflow.registry import STRATEGIES
from siteflow.strategies.base import SiteRunner, Strategy


@STRATEGIES.register("sequential")
class SequentialStrategy(Strategy):
    """Site ``k`` starts from site ``k-1``'s final weights; the order repeats ``cycles`` times.

    The first site starts from its ``checkpoint.load`` file if one is set (a deployed site
    continuing a chain), else from the run's initial weights.
    """

    def __init__(self, cycles: int = 1) -> None:
        if cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {cycles}")
        self.cycles = cycles

    def run(self, runner: SiteRunner) -> None:
        state = runner.initial_state(runner.tasks[0])
        for cycle in range(1, self.cycles + 1):
            for task in runner.tasks:
                stage = task.task_name if self.cycles == 1 else f"cycle{cycle}/{task.task_name}"
                save_dir = task.save_dir if self.cycles == 1 else f"cycle{cycle}/{task.save_dir}"
                state = runner.fit(stage, [task], state, save_dir=save_dir)
                runner.test(stage, state, trained_site=task.task_name)
