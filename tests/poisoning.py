"""A poisoned site for the robustness tests: a real federated strategy whose one named site
sends a sign-flipped, scaled update and claims a huge sample count (its BatchNorm statistics
are left as trained, so that the poison passes a plausibility check on them)."""

from __future__ import annotations

from siteflow.strategies.federated import FedAvgStrategy, SiteUpdate

POISONED = "site5"
SCALE = 3.0
CLAIMED = 10**6


class PoisonedFedAvg(FedAvgStrategy):
    """FedAvg whose site :data:`POISONED` sends ``w_global - SCALE * (w - w_global)`` for every
    parameter it trained (a sign flip, scaled) and claims :data:`CLAIMED` samples."""

    def site_step(self, site, received, round_number):
        update = super().site_step(site, received, round_number)
        if site.name != POISONED:
            return update
        parameters = {name for name, _ in self.build_network(site.context.task).named_parameters()}
        weights = {
            name: received[name] - SCALE * (tensor - received[name]) if name in parameters else tensor
            for name, tensor in update.weights.items()
        }
        return SiteUpdate(site.name, weights, CLAIMED)
