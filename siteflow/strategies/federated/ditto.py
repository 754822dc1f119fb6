"""ditto: a personal model per site, regularised towards the global one (Li et al., "Ditto:
Fair and Robust Federated Learning Through Personalization", ICML 2021)."""

from __future__ import annotations

from typing import Any

from siteflow.core.registry import STRATEGIES
from siteflow.core.types import Weights
from siteflow.strategies.federated.base import FederatedStrategy, SiteUpdate
from siteflow.strategies.federated.fedprox import ProximalTerm
from siteflow.strategies.federated.site import FederatedSite
from siteflow.strategies.federated.store import LOCAL


@STRATEGIES.register("ditto")
class DittoStrategy(FederatedStrategy):
    """Ditto: the global model trains as in FedAvg; besides, every site trains a personal
    model of its own for the same budget each round, on its loss plus ``lam / 2 * ||v -
    w||^2`` towards the global weights ``w`` it received (starting from them the first time).
    The personal model never leaves the site (its store, as the whole of its kept weights);
    every site is tested with its own personal model, and the server with none keeps the
    global one (the final global weights beside the sites' own, as FedBN's).

    Args:
        lam: Ditto's lambda, non-negative: 0 trains the personal models alone, a large value
            keeps them at the global one.
        **kwargs: the options of :class:`FederatedStrategy` (rounds, local_epochs or
            local_steps, weighting, min_sites, fraction, test_every).
    """

    def __init__(self, lam: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not lam >= 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        self.lam = lam

    def site_step(self, site: FederatedSite, received: Weights, round_number: int) -> SiteUpdate:
        """The global model's local update from ``received`` (sent back), then the personal
        model's (kept)."""
        update = self.local_update(site, received, round_number)
        personal = self.site_start_weights(site, received, before=round_number)  # the received weights, the first time
        trained = self.train_locally(
            site, f"round{round_number}/{site.name}/personal", personal, [ProximalTerm(received, self.lam)],
            round_number=round_number, model="personal",
        )
        site.store.save(LOCAL, round_number, trained)
        return update
