"""clipped_mean: the weighted average of the sites' updates, each first scaled down to at most
``factor`` times the round's median update norm (norm bounding, Sun et al., "Can you really
backdoor federated learning?", 2019, with the median norm as the bound)."""

from __future__ import annotations

from typing import Sequence

from siteflow.core.types import Weights
from siteflow.strategies.federated.aggregation import weighted_average
from siteflow.strategies.federated.robust.base import ROBUST_RULES, RobustRule, log, update_norms
from siteflow.strategies.federated.robust.median import middle


@ROBUST_RULES.register("clipped_mean")
class ClippedMean(RobustRule):
    """Every site's update ``w_i - w_global`` (over the floating-point tensors it sends) whose
    L2 norm exceeds ``factor * median(norms)`` is scaled down to that norm; then the usual
    weighted average. One site moves the average by at most its weight times the bound: cap
    the sample counts (``enrolled_samples``) or set ``weighting: equal`` so that a site's
    weight is bounded too.

    Args:
        factor: the bound in units of the round's median update norm (positive).
    """

    def __init__(self, factor: float = 1.0) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(f"factor must be positive, got {factor!r}")
        self.factor = float(factor)

    def combine(
        self, round_number: int, sites: Sequence[str], states: Sequence[Weights], weights: Sequence[float], reference: Weights
    ) -> Weights:
        norms = update_norms(states, reference)
        bound = self.factor * float(middle(norms.sort().values))
        clipped = []
        for site, state, norm in zip(sites, states, norms.tolist()):
            if norm <= bound:
                clipped.append(state)
                continue
            scale = bound / norm
            log.warning("round %d: site %s's update scaled from norm %.4g to %.4g", round_number, site, norm, bound)
            clipped.append({
                name: (reference[name].double() + scale * (tensor.double() - reference[name].double())).to(tensor.dtype)
                if tensor.is_floating_point() else tensor
                for name, tensor in state.items()
            })
        return weighted_average(clipped, weights)
