"""A poisoned site for the robustness tests: a real federated strategy whose one named site
sends a sign-flipped, scaled update and claims a huge sample count (its BatchNorm statistics
are left as trained, so that the poison passes a plausibility check on them).

Registered as the strategy ``poisoned_fedavg`` only where a deployed test loads the plug-in
``tests/plugins/poisoned.py`` (every site runs the same config, and the poisoned one poisons);
importing this module registers nothing."""

from __future__ import annotations

from typing import Any

from siteflow.strategies.federated import FedAvgStrategy, SiteUpdate

POISONED = "site5"
SCALE = 3.0
CLAIMED = 10**6


class PoisonedFedAvg(FedAvgStrategy):
    """FedAvg whose site ``poisoned_site`` sends ``w_global - scale * (w - w_global)`` for
    every parameter it trained (a sign flip, scaled) and claims ``claimed`` samples.

    Args:
        poisoned_site: the name of the site that poisons.
        scale: how much the flipped update is scaled.
        claimed: the sample count the poisoned site claims.
        **kwargs: fedavg's options.
    """

    def __init__(self, poisoned_site: str = POISONED, scale: float = SCALE, claimed: int = CLAIMED, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poisoned_site, self.scale, self.claimed = poisoned_site, scale, claimed

    def site_step(self, site, received, round_number):
        update = super().site_step(site, received, round_number)
        if site.name != self.poisoned_site:
            return update
        parameters = {name for name, _ in self.build_network(site.context.task).named_parameters()}
        weights = {
            name: received[name] - self.scale * (tensor - received[name]) if name in parameters else tensor
            for name, tensor in update.weights.items()
        }
        return SiteUpdate(site.name, weights, self.claimed)
