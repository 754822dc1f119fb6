"""Base class of metrics that keep one row of per-class values per sample."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from siteflow.metrics.classes import Average, average_classes, check_average, reported_classes


class PerSampleMetric(Metric):
    """Keeps a ``(N, C_reported)`` table of per-sample, per-class values.

    Subclasses' ``update`` adds the rows of a batch with :meth:`_append`. :meth:`compute` returns the
    mean over samples of the class average (``"macro"``: a scalar), or the per-class means over
    samples (``"none"``: ``(C_reported,)``); :meth:`per_sample` returns the whole table, e.g. for
    CSV export. In distributed runs both gather the rows of all processes.

    Args:
        num_classes: number of classes, at least 2.
        include_background: report class 0 as well.
        average: ``"macro"`` or ``"none"``.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_classes: int, include_background: bool = False, average: Average = "macro") -> None:
        super().__init__()
        check_average(average)
        self.classes = reported_classes(num_classes, include_background)
        self.num_classes = num_classes
        self.include_background = include_background
        self.average = average
        self.add_state("values", default=[], dist_reduce_fx="cat")

    @property
    def num_reported(self) -> int:
        """Number of reported classes, ``C_reported``."""
        return self.classes.stop - self.classes.start

    def _append(self, rows: Tensor) -> None:
        """Add the rows ``(N, C_reported)`` of one batch."""
        self.values.append(rows.to(torch.get_default_dtype()))

    def compute(self) -> Tensor:
        return average_classes(self._table().mean(0), self.average)

    def per_sample(self) -> Tensor:
        """All rows so far, ``(N, C_reported)``, in the order they were added."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            return self._table().clone()

    def _table(self) -> Tensor:
        if isinstance(self.values, list) and not self.values:
            return torch.empty(0, self.num_reported, device=self.device)
        return dim_zero_cat(self.values)
