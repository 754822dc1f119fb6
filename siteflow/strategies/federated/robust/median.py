"""median: the coordinate-wise median of the sites' weights (Yin et al., ICML 2018; Flower's
``FedMedian``)."""

from __future__ import annotations

from typing import Sequence

import torch

from siteflow.core.types import Weights
from siteflow.strategies.federated.robust.base import ROBUST_RULES, RobustRule, coordinatewise


def middle(ordered: torch.Tensor) -> torch.Tensor:
    """The median along dimension 0 of values sorted along it: the mean of the two middle
    values when their number is even."""
    count = ordered.shape[0]
    return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2


@ROBUST_RULES.register("median")
class CoordinateMedian(RobustRule):
    """Every weight is the median of the sites' values of it: fewer than half of the sites
    cannot move it out of the range of the others'. The sample counts are not used, so a
    site's claimed count does not matter."""

    def combine(
        self, round_number: int, sites: Sequence[str], states: Sequence[Weights], weights: Sequence[float], reference: Weights
    ) -> Weights:
        return coordinatewise(states, middle)
