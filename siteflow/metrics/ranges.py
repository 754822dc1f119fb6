"""The range of every metric siteflow reports, to refuse a value no test can produce (a Dice
of 1e9, a negative distance) when it comes from elsewhere (a deployed site's reply)."""

from __future__ import annotations

import math

UNIT = ("dice", "iou", "sensitivity", "specificity", "auroc", "accuracy", "balanced_accuracy", "macro_f1")
"""Metrics in [0, 1] (their per-sample, per-class or per-label variants ``<name>_...`` too)."""
SIGNED_UNIT = ("kappa",)
"""Metrics in [-1, 1]."""
NON_NEGATIVE = ("hd95", "asd", "loss", "reconstruction_loss")
"""Metrics in [0, inf] (a distance to an empty mask may be infinite)."""


def metric_range(name: str) -> tuple[float, float] | None:
    """The closed range of metric ``name`` (a name, or ``<name>_<variant>``), None if unknown."""
    for names, bounds in ((UNIT, (0.0, 1.0)), (SIGNED_UNIT, (-1.0, 1.0)), (NON_NEGATIVE, (0.0, math.inf))):
        if any(name == known or name.startswith(f"{known}_") or name.endswith(f"_{known}") for known in names):
            return bounds
    return None


def out_of_range(name: str, value: float, *, required: bool = False) -> str | None:
    """Why ``value`` cannot be metric ``name`` (None if it can): outside its range, or not a
    number where the metric is ``required`` (a site-matrix metric); NaN passes otherwise (an
    AUROC of a label without positives)."""
    if math.isnan(value):
        return f"{name} is NaN" if required else None
    bounds = metric_range(name)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        return f"{name} = {value!r} is outside [{bounds[0]:g}, {bounds[1]:g}]"
    return None
