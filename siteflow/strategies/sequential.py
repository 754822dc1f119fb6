"""sequential: fine-tune site after site; with ``cycles > 1``, cyclic weight transfer."""

from __future__ import annotations

from siteflow.core.registry import STRATEGIES
from siteflow.strategies.base import Carried, SiteRunner, Strategy


@STRATEGIES.register("sequential")
class SequentialStrategy(Strategy):
    """Site ``k`` starts from site ``k-1``'s final weights; the order repeats ``cycles`` times.

    After every site the weights and the chain of sites so far are written as a hand-over
    file, which a deployed next site names in its ``checkpoint.load``. The first site starts
    from its ``checkpoint.load`` file if one is set, else from the run's initial weights.
    """

    hands_over = True

    def __init__(self, cycles: int = 1) -> None:
        if cycles < 1:
            raise ValueError(f"cycles must be at least 1, got {cycles}")
        self.cycles = cycles

    def run(self, runner: SiteRunner) -> None:
        carried = runner.initial_state(runner.tasks[0])
        for cycle in range(1, self.cycles + 1):
            for task in runner.tasks:
                stage = task.task_name if self.cycles == 1 else f"cycle{cycle}/{task.task_name}"
                save_dir = task.save_dir if self.cycles == 1 else f"cycle{cycle}/{task.save_dir}"
                weights = runner.fit(stage, [task], carried, save_dir=save_dir)
                carried = Carried(weights, carried.sites + (runner.site_record(task),))
                runner.hand_over(carried, save_dir=save_dir)
                runner.test(stage, weights, trained_site=task.task_name)
