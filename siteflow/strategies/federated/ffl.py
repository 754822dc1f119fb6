"""ffl: federated learning across sites whose label sets differ (after Tayebi Arasteh et al.,
Sci Rep 13:6046, 2023)."""

from __future__ import annotations

from typing import Any, Literal

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.strategies.base import Trainee
from siteflow.strategies.federated.base import FederatedStrategy
from siteflow.strategies.federated.site import FederatedSite
from siteflow.tasks import Task


@STRATEGIES.register("ffl")
class FFLStrategy(FederatedStrategy):
    """Flexible federated learning.

    The classifier (a ``trunk`` and a ``head`` over the union of all sites' labels) trains at
    every site on that site's own labels (masked BCE with ``pos_weight``). The server averages
    the trunk only, normalisation buffers included; every site keeps its head, of which it
    trains and is tested on its own labels' rows: one head per site's label set, which never
    leaves the site. ``shared_head`` averages the head too (the union-head variant: one head,
    masked BCE). ``fine_tune_epochs`` trains every site alone from the final global trunk and
    its own head after the rounds, tested as the row ``finetuned`` (in a simulation and
    deployed alike).

    Args:
        weighting: ``"equal"`` (the paper's default) or ``"samples"``.
        shared_head: average the head as well.
        fine_tune_epochs: per-site fine-tuning after the rounds (0: none).
        **kwargs: the other options of :class:`FederatedStrategy`.
    """

    finish_stage = "finetuned"

    def __init__(
        self,
        weighting: Literal["samples", "equal"] = "equal",
        shared_head: bool = False,
        fine_tune_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(weighting=weighting, **kwargs)
        if fine_tune_epochs < 0:
            raise ValueError(f"fine_tune_epochs must be non-negative, got {fine_tune_epochs}")
        self.shared_head = shared_head
        self.fine_tune_epochs = fine_tune_epochs

    def local_keys(self, task: Task) -> set[str]:
        """The head's weights, unless it is shared."""
        if self.shared_head:
            return set()
        network = self.build_network(task)
        keys = {name for name in network.state_dict() if name.startswith("head.")}
        if not keys:
            raise ValueError(f"ffl keeps the model's 'head' at each site, but {type(network).__name__} has none")
        return keys

    @property
    def finishes(self) -> bool:
        return self.fine_tune_epochs > 0

    def site_finish(self, site: FederatedSite, global_weights: Weights) -> Weights:
        """Fine-tune the site alone from the final global trunk and its own head."""
        context = site.context
        start = self.site_start_weights(site, global_weights, before=self.rounds + 1)
        trainee = Trainee(
            lambda: self.build_network(context.task),
            lambda network: self.site_learner(context, site, network, start, ()),
        )
        return site.fit(
            f"finetune/{site.name}", start, trainee, epochs=self.fine_tune_epochs, seed_offset=0, save_dir=f"finetune/{site.site_run.save_dir}"
        )
