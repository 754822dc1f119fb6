"""Whether received weights are ones training could have produced: finite values can still be
impossible (a negative BatchNorm variance trains a site to Dice 0 without an error; a negative
step counter; weights a million times larger than the network's own).

Checked against a reference of the same names (the network's fresh initialisation, or the
federation's current global weights):

- a BatchNorm running variance (``*running_var``) below zero;
- an integer tensor (step counters such as ``num_batches_tracked``) below zero;
- a floating-point tensor whose largest magnitude exceeds :data:`MAX_GROWTH` times the
  reference's (at least 1), or :data:`MAX_STATISTIC` for running statistics, which follow the
  data's intensities (CT in Hounsfield units) rather than the initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

MAX_GROWTH = 1e6
"""How many times the reference's largest magnitude (at least 1) a weight may reach."""
MAX_STATISTIC = 1e12
"""The largest magnitude a running mean or variance may reach."""

__all__ = ["MAX_GROWTH", "MAX_STATISTIC", "implausible"]


def implausible(weights: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``weights`` cannot come from training (None if they can), naming the first tensor by
    name that fails; tensors ``reference`` lacks are checked for sign only; values must be
    finite already (see :mod:`siteflow.core.finite`)."""
    for name in sorted(weights):
        tensor = weights[name]
        if tensor.numel() == 0 or tensor.is_complex():
            continue
        if not tensor.is_floating_point():
            if tensor.dtype != torch.bool and int(tensor.min()) < 0:
                return f"{name!r} is a counter below zero ({int(tensor.min())})"
            continue
        values = tensor.detach().float()
        statistic = name.endswith(("running_var", "running_mean"))
        if name.endswith("running_var") and float(values.min()) < 0:
            return f"{name!r} is a variance below zero ({float(values.min()):.4g})"
        largest = float(values.abs().max())
        if statistic:
            bound = MAX_STATISTIC
        else:
            like = reference.get(name)
            scale = float(like.detach().float().abs().max()) if like is not None and like.is_floating_point() and like.numel() else 0.0
            bound = MAX_GROWTH * max(1.0, scale)
        if largest > bound:
            return f"{name!r} reaches a magnitude of {largest:.4g}, beyond {bound:.4g}, which training does not produce"
    return None
