"""Class weights computed from the training counts of each class (class-balanced losses).

A loss that takes ``class_weights: balanced | effective`` leaves its weights to the task,
which counts the classes of the sites' training splits and builds the loss again with
:meth:`CountWeighted.weights_for` of those counts (see ``Task.build_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

ClassWeighting = Literal["balanced", "effective"]


def class_balanced_weights(counts: Sequence[int], scheme: ClassWeighting, beta: float = 0.999) -> list[float]:
    """One weight per class from its training count ``n_k`` (``counts``, K entries).

    * ``balanced``: ``N / (K' * n_k)`` with N the samples and K' the classes present
      (scikit-learn's ``compute_class_weight("balanced")``): each class weighs as much in total.
    * ``effective``: ``(1 - beta) / (1 - beta ** n_k)``, the inverse "effective number of
      samples" (Cui et al., CVPR 2019), scaled so that the present classes' weights sum to K'.

    A class without training samples gets weight 0 (it cannot occur in the loss anyway).
    Raises ValueError for no sample at all, a negative count, or ``beta`` outside [0, 1).
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or (n < 0).any():
        raise ValueError(f"class counts must be non-negative, got {list(counts)}")
    present = n > 0
    if not present.any():
        raise ValueError("class-balanced weights need at least one training sample")
    weights = np.zeros_like(n)
    if scheme == "balanced":
        weights[present] = n.sum() / (present.sum() * n[present])
    elif scheme == "effective":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        raw = (1.0 - beta) / (1.0 - beta ** n[present])
        weights[present] = raw * present.sum() / raw.sum()
    else:
        raise ValueError(f"class_weights must be a list, 'balanced' or 'effective', not {scheme!r}")
    return weights.tolist()


class CountWeighted:
    """Mixin of a loss whose ``class_weights`` may be a :data:`ClassWeighting`: it keeps the
    scheme in ``weighting`` (None for explicit weights) until the task gives it the counts."""

    weighting: ClassWeighting | None
    beta: float

    def weights_for(self, counts: Sequence[int]) -> list[float]:
        """The class weights of this loss's scheme for training ``counts`` (K,)."""
        if self.weighting is None:
            raise ValueError("this loss has explicit class weights")
        return class_balanced_weights(counts, self.weighting, self.beta)
