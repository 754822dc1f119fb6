"""trimmed_mean: the coordinate-wise mean of the sites' weights without the ``beta`` share of
the largest and of the smallest values (Yin et al., ICML 2018; Flower's ``FedTrimmedAvg``)."""

from __future__ import annotations

import math
from typing import Sequence

from siteflow.core.types import Weights
from siteflow.strategies.federated.robust.base import ROBUST_RULES, RobustRule, coordinatewise


@ROBUST_RULES.register("trimmed_mean")
class TrimmedMean(RobustRule):
    """Every weight is the mean of the sites' values of it once the ``floor(beta * sites)``
    largest and as many smallest are dropped (an unweighted mean: the counts are not used).

    Args:
        beta: the share cut at each end, in [0, 0.5); with 5 sites, 0.2 drops one at each end.
    """

    def __init__(self, beta: float = 0.2) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def combine(
        self, round_number: int, sites: Sequence[str], states: Sequence[Weights], weights: Sequence[float], reference: Weights
    ) -> Weights:
        cut = math.floor(self.beta * len(states))
        return coordinatewise(states, lambda ordered: ordered[cut : len(states) - cut].mean(dim=0))
