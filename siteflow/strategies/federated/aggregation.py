"""Aggregation of sites' weights: pure functions over name-keyed tensors.

Used by the federated strategies, simulated and on Flower alike, so both average the same way.
"""

from __future__ import annotations

from typing import Iterable, Literal, Mapping, Sequence

import torch

from siteflow.kernels import weighted_sum

Weighting = Literal["samples", "equal"]


def aggregation_coefficients(sample_counts: Sequence[int], weighting: Weighting) -> list[float]:
    """Aggregation weights that sum to 1: by training-sample count (FedAvg) or equal."""
    if not sample_counts:
        raise ValueError("no site to aggregate")
    if weighting == "equal":
        return [1.0 / len(sample_counts)] * len(sample_counts)
    if weighting != "samples":
        raise ValueError(f"weighting must be 'samples' or 'equal', got {weighting!r}")
    if min(sample_counts) < 0 or sum(sample_counts) == 0:
        raise ValueError(f"sample counts must be non-negative and not all zero, got {list(sample_counts)}")
    total = float(sum(sample_counts))
    return [count / total for count in sample_counts]


def weighted_average(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    *,
    keys: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * states[i][name]`` for every name (weights should sum to 1).

    Floating tensors are averaged in float32 (float64 stays float64) and returned in their own
    dtype, in one pass over memory (:func:`siteflow.kernels.weighted_sum`); integer tensors
    (BatchNorm's ``num_batches_tracked``) cannot be averaged and are taken from the site with
    the largest weight.

    Args:
        states: one mapping name -> tensor per site, all with the same names and shapes.
        weights: one weight per site.
        keys: the names to aggregate (default: all names of the first state).

    Raises:
        ValueError: the states disagree on names or shapes, or the counts do not match.
    """
    if len(states) != len(weights) or not states:
        raise ValueError(f"{len(states)} states and {len(weights)} weights: need one weight per state, at least one")
    names = list(states[0]) if keys is None else list(keys)
    for index, state in enumerate(states):
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"state {index} lacks {missing[:5]}")
    heaviest = max(range(len(weights)), key=lambda i: weights[i])
    averaged = {}
    for name in names:
        first = states[0][name]
        for index, state in enumerate(states[1:], 1):
            if state[name].shape != first.shape:
                raise ValueError(f"{name}: state {index} has shape {tuple(state[name].shape)}, state 0 {tuple(first.shape)}")
        if not first.is_floating_point():
            averaged[name] = states[heaviest][name].clone()
            continue
        averaged[name] = weighted_sum([state[name] for state in states], weights)
    return averaged
