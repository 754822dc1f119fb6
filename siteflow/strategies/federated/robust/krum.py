"""krum: the update(s) closest to their neighbours (Blanchard et al., NeurIPS 2017; multi-Krum
with ``select > 1``; Flower's ``Krum``)."""

from __future__ import annotations

from typing import Sequence

from siteflow.core.types import Weights
from siteflow.strategies.federated.aggregation import weighted_average
from siteflow.strategies.federated.robust.base import ROBUST_RULES, RobustRule, log, squared_distances


@ROBUST_RULES.register("krum")
class Krum(RobustRule):
    """Each site's score is the sum of the squared distances from its weights to its
    ``sites - byzantine - 2`` nearest others' (at least one); the ``select`` sites of the lowest
    scores are averaged with their aggregation weights (renormalised), the others are left out
    by name in the log.

    Args:
        byzantine: ``f``, the number of sites that may send anything (at least 0); Krum's
            guarantee needs ``sites > 2 f + 2``.
        select: ``m``, how many sites are averaged: 1 is Krum, more is multi-Krum (at most
            ``sites - byzantine``; a round with fewer sites selects what it can).
    """

    def __init__(self, byzantine: int = 1, select: int = 1) -> None:
        for name, value, least in (("byzantine", byzantine, 0), ("select", select, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
        self.byzantine = byzantine
        self.select = select

    def scores(self, states: Sequence[Weights]) -> list[float]:
        """Krum's score of every state (lower: closer to its neighbours)."""
        distances = squared_distances(states)
        neighbours = max(1, len(states) - self.byzantine - 2)
        return [float(row[[j for j in range(len(states)) if j != i]].sort().values[:neighbours].sum()) for i, row in enumerate(distances)]

    def combine(
        self, round_number: int, sites: Sequence[str], states: Sequence[Weights], weights: Sequence[float], reference: Weights
    ) -> Weights:
        if len(states) == 1:
            return dict(states[0])
        scores = self.scores(states)
        kept = sorted(range(len(states)), key=lambda i: (scores[i], i))[: max(1, min(self.select, len(states) - self.byzantine))]
        left = [sites[i] for i in range(len(states)) if i not in kept]
        if left:
            log.warning("round %d: krum left out %s (kept %s)", round_number, ", ".join(left), ", ".join(sites[i] for i in sorted(kept)))
        total = sum(weights[i] for i in kept)
        return weighted_average([states[i] for i in kept], [weights[i] / total for i in kept])
