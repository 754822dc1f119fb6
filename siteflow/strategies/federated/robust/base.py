"""The base of the robust aggregation rules, and what they share: the floating-point
weights' updates ``w_i - w_global`` and their norms."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Sequence

import torch

from siteflow.core.registry import Registry
from siteflow.core.types import Weights

log = logging.getLogger("siteflow.strategies.federated.robust")

ROBUST_RULES: Registry = Registry("robust aggregation rule")
"""Name -> :class:`RobustRule` subclass (the strategy option ``robust: {name: ...}``)."""


class RobustRule(ABC):
    """A rule that makes the new global weights out of the sites' weights in a round, in
    place of their weighted average."""

    @abstractmethod
    def combine(
        self, round_number: int, sites: Sequence[str], states: Sequence[Weights], weights: Sequence[float], reference: Weights
    ) -> Weights:
        """The aggregate of ``states`` (one per site of ``sites``, all with the same names and
        shapes; ``weights``: the strategy's aggregation weights, summing to 1; ``reference``:
        the global weights the sites started from, a superset of the names)."""


def stacked(states: Sequence[Weights], name: str) -> torch.Tensor:
    """The sites' tensors ``name`` stacked along a new first dimension: (sites, *shape)."""
    return torch.stack([state[name] for state in states])


def coordinatewise(states: Sequence[Weights], statistic) -> Weights:
    """``statistic`` (a function of a float tensor (sites, *shape) sorted along dimension 0,
    to (*shape)) of every floating-point tensor, in float32 (float64 stays float64) and back
    in the tensor's dtype; an integer tensor (BatchNorm's ``num_batches_tracked``) takes its
    lower median."""
    result = {}
    for name, first in states[0].items():
        values = stacked(states, name)
        if not first.is_floating_point():
            result[name] = values.median(dim=0).values
            continue
        ordered = values.to(torch.promote_types(first.dtype, torch.float32)).sort(dim=0).values
        result[name] = statistic(ordered).to(first.dtype)
    return result


def update_norms(states: Sequence[Weights], reference: Weights) -> torch.Tensor:
    """The L2 norm of each site's update ``w_i - w_global`` over every floating-point tensor it
    sends: float64 (sites,)."""
    squares = torch.zeros(len(states), dtype=torch.float64)
    for name, first in states[0].items():
        if first.is_floating_point():
            deltas = stacked(states, name).double() - reference[name].double()
            squares += deltas.flatten(1).square().sum(1)
    return squares.sqrt()


def squared_distances(states: Sequence[Weights]) -> torch.Tensor:
    """The squared L2 distances between the sites' floating-point weights: float64 (sites, sites)."""
    distances = torch.zeros(len(states), len(states), dtype=torch.float64)
    for name, first in states[0].items():
        if first.is_floating_point():
            flat = stacked(states, name).double().flatten(1)
            distances += torch.cdist(flat, flat).square()
    return distances
