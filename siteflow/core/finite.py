"""Whether weights are finite: a NaN or an infinity in one tensor makes every later step NaN."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["NonFiniteWeights", "check_finite_weights", "first_non_finite", "non_finite_count"]


class NonFiniteWeights(ValueError):
    """Weights that hold a NaN or an infinity, refused by name (the first such tensor)."""


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many values of ``tensor`` are NaN or infinite (0 for integer and boolean tensors)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    if tensor.element_size() == 1:  # torch has no isfinite for some 8-bit floats (float8_e4m3fn)
        tensor = tensor.float()
    return int(torch.isfinite(tensor).logical_not().sum())


def first_non_finite(weights: Mapping[str, torch.Tensor]) -> tuple[str, int] | None:
    """(name, count of non-finite values) of the first tensor by name that holds any; None
    when every tensor is finite."""
    for name in sorted(weights):
        count = non_finite_count(weights[name])
        if count:
            return name, count
    return None


def check_finite_weights(weights: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse ``weights`` (described by ``what``: a file, a stage) if a tensor is not finite.

    Raises:
        NonFiniteWeights: naming the first such tensor and how many of its values."""
    found = first_non_finite(weights)
    if found is not None:
        name, count = found
        raise NonFiniteWeights(
            f"{what}: the weights hold values that are not finite (NaN or infinity): {name!r} holds {count:,} "
            f"of {weights[name].numel():,} (the first such tensor by name)"
        )
