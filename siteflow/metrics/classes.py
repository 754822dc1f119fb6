"""Which classes a segmentation metric reports, and how it averages over them."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Average = Literal["macro", "none"]


def reported_classes(num_classes: int, include_background: bool) -> slice:
    """The class indices a metric reports: all of ``range(num_classes)``, or all but class 0."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return slice(0 if include_background else 1, num_classes)


def check_average(average: str) -> None:
    """Raise ValueError unless ``average`` is ``"macro"`` or ``"none"``."""
    if average not in ("macro", "none"):
        raise ValueError(f"average must be 'macro' or 'none', got {average!r}")


def average_classes(per_class: Tensor, average: Average) -> Tensor:
    """Reduce per-class values ``(..., C)``: their mean over ``C`` (``"macro"``) or themselves (``"none"``)."""
    return per_class.mean(-1) if average == "macro" else per_class
