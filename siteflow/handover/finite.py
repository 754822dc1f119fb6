"""Whether the received weights are finite: a NaN or an infinity makes every later step NaN.

A model whose weights hold a NaN or an infinity trains, at the next site, to nothing (Dice
0), with no error; so the receiver refuses such weights, naming the first tensor (in name
order) that holds one. Integer and boolean tensors are always finite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from siteflow.handover.errors import HandoverError

__all__ = ["check_finite"]


def check_finite(path: str | os.PathLike, weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse ``weights`` if a floating-point or complex tensor holds a NaN or an infinity."""
    for name in sorted(weights):
        count = _non_finite(weights[name])
        if count:
            raise HandoverError(
                path,
                f"the weights hold values that are not finite (NaN or infinity): {name!r} holds {count:,} "
                f"of {weights[name].numel():,} (the first such tensor by name)",
            )


def _non_finite(tensor: torch.Tensor) -> int:
    """How many values of ``tensor`` are NaN or infinite."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    if tensor.element_size() == 1:  # torch has no isfinite for some 8-bit floats (float8_e4m3fn)
        tensor = tensor.float()
    return int(torch.isfinite(tensor).logical_not().sum())
