"""Whether the received weights are finite: a NaN or an infinity makes every later step NaN.

A model whose weights hold a NaN or an infinity trains, at the next site, to nothing (Dice
0), with no error; so the receiver refuses such weights, naming the first tensor (in name
order) that holds one. Integer and boolean tensors are always finite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from siteflow.core.finite import first_non_finite
from siteflow.handover.errors import HandoverError

__all__ = ["check_finite"]


def check_finite(path: str | os.PathLike, weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse ``weights`` if a floating-point or complex tensor holds a NaN or an infinity."""
    found = first_non_finite(weights)
    if found is not None:
        name, count = found
        raise HandoverError(
            path,
            f"the weights hold values that are not finite (NaN or infinity): {name!r} holds {count:,} "
            f"of {weights[name].numel():,} (the first such tensor by name)",
        )
