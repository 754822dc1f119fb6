"""One site of a federation: trains and tests its own task, keeps its own weights.

Both drivers use it: the in-process simulation (one per site) and the Flower ClientApp (the
hospital's own site). The strategy says what a site does in a round
(:meth:`FederatedStrategy.site_step`); this object is what it does it with.
"""

from __future__ import annotations

import logging
from typing import Sequence

from siteflow.config import SiteRun
from siteflow.core.types import Weights
from siteflow.strategies.base import SolverFactory, StudyContext, Trainee
from siteflow.strategies.federated.store import SiteStore

log = logging.getLogger(__name__)


class FederatedSite:
    """A site's training, testing and own storage in a federation.

    Args:
        context: the run the site trains in (a simulation's, or the deployed site's own).
        site_run: the site.
    """

    def __init__(self, context: StudyContext, site_run: SiteRun) -> None:
        self.context = context
        self.site_run = site_run
        self.store = SiteStore(context.site_folder(site_run.task_name))

    @property
    def name(self) -> str:
        return self.site_run.task_name

    @property
    def num_samples(self) -> int:
        """The site's training-sample count (its weight in sample-weighted averaging)."""
        return self.context.sample_count(self.site_run)

    def fit(self, stage: str, start: Weights, trainee: Trainee, *, epochs: int, seed_offset: int, save_dir: str | None = None) -> Weights:
        """Train the site from ``start`` (saved under ``save_dir`` only if given)."""
        return self.context.fit(stage, [self.site_run], start, trainee, save_dir=save_dir, epochs=epochs, seed_offset=seed_offset)

    def evaluate(self, weights: Weights, solver: SolverFactory, sites: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """Test ``weights`` on this site's own test split (or on ``sites``)."""
        return self.context.evaluate(weights, solver, sites=[self.name] if sites is None else sites)
