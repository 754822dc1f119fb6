"""Surface distances per sample and class, in the units of the spacing (mm for volumes): the
95th-percentile Hausdorff distance (HD95) and the average symmetric surface distance (ASD)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from torch import Tensor

from siteflow.kernels.reference import check_labels, predict_labels
from siteflow.metrics.classes import reported_classes
from siteflow.metrics.per_sample import PerSampleMetric

Spacing = float | Sequence[float] | Sequence[Sequence[float]] | Tensor | None


def _spacing_table(spacing: Spacing, samples: int, dims: int) -> Tensor:
    """Pixel spacing as a float64 ``(N, dims)`` table: one value for all axes, one per axis, or one row per sample."""
    table = torch.as_tensor(1.0 if spacing is None else spacing, dtype=torch.float64).cpu()
    if table.dim() == 0:
        table = table.expand(dims)
    if table.shape not in ((dims,), (samples, dims)):
        raise ValueError(f"spacing must be a number, {dims} numbers, or a ({samples}, {dims}) table, got {spacing}")
    if bool((table <= 0).any()):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return table.expand(samples, dims)


def hd95(
    pred: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    include_background: bool = False,
    spacing: Spacing = None,
) -> Tensor:
    """Symmetric 95th-percentile Hausdorff distance per sample and class, 2D or 3D.

    The distance between the boundaries of the predicted and the true mask of each class is
    computed by MONAI's ``compute_hausdorff_distance(percentile=95)``. The two cases it cannot
    measure are defined as follows:

    - class absent from both prediction and truth: 0;
    - class absent from exactly one of them: the image diagonal in spacing units,
      ``sqrt(sum(((size_d - 1) * spacing_d) ** 2))``, the largest distance two pixel centres of
      the image can have, so a missed or hallucinated structure scores at least as badly as any
      prediction that exists.

    Args:
        pred: floating logits ``(N, C, *spatial)`` or an integer prediction ``(N, *spatial)``;
            see :func:`siteflow.kernels.predict_labels`.
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, num_classes)``.
        num_classes: number of classes, at least 2.
        include_background: report class 0 as well.
        spacing: pixel spacing: None (1 on every axis), one number for all axes, one number per
            spatial axis, or an ``(N, n_axes)`` table with one row per sample.

    Returns:
        float32 ``(N, C_reported)`` on the device of ``pred``.
    """
    return _surface_distance(
        pred, labels, num_classes, include_background, spacing,
        lambda p, t, table: compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=table),
    )


def average_surface_distance(
    pred: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    include_background: bool = False,
    spacing: Spacing = None,
) -> Tensor:
    """Average symmetric surface distance per sample and class, 2D or 3D: the mean, over the
    boundary voxels of both masks, of the distance to the other mask's boundary (MONAI's
    ``compute_average_surface_distance(symmetric=True)``), in the units of ``spacing``. A class
    absent from both masks scores 0, from one of them the image diagonal, as in :func:`hd95`.

    Args and returns: as :func:`hd95`.
    """
    return _surface_distance(
        pred, labels, num_classes, include_background, spacing,
        lambda p, t, table: compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=table),
    )


def _surface_distance(
    pred: Tensor,
    labels: Tensor,
    num_classes: int,
    include_background: bool,
    spacing: Spacing,
    measure: Callable[[Tensor, Tensor, list], Tensor],
) -> Tensor:
    """``measure(pred_masks, true_masks, spacing rows)`` (MONAI's, on bool masks
    (N, C_reported, *spatial)) per sample and class, with the empty cases of :func:`hd95`."""
    classes = reported_classes(num_classes, include_background)
    pred = predict_labels(pred, num_classes)
    check_labels(labels, pred.shape, num_classes, None)
    spatial = pred.shape[1:]
    spacing_table = _spacing_table(spacing, pred.shape[0], len(spatial))

    pred_masks = F.one_hot(pred, num_classes).movedim(-1, 1)[:, classes].bool()  # (N, C_reported, *spatial)
    true_masks = F.one_hot(labels.long(), num_classes).movedim(-1, 1)[:, classes].bool()
    with warnings.catch_warnings():
        # MONAI warns about every empty mask (those cases are replaced below) and, internally, about
        # a deprecated argument of its own get_mask_edges.
        warnings.filterwarnings("ignore", message="the (ground truth|prediction) of class", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*get_mask_edges:always_return_as_numpy", category=FutureWarning)
        distance = measure(pred_masks, true_masks, spacing_table.tolist())

    pred_any = pred_masks.flatten(2).any(-1)
    true_any = true_masks.flatten(2).any(-1)
    sizes = torch.tensor(spatial, dtype=torch.float64) - 1
    diagonal = (sizes * spacing_table).norm(dim=1).to(distance.device, torch.float32).unsqueeze(1)  # (N, 1)
    one_empty = torch.where(pred_any | true_any, diagonal, 0.0)
    return torch.where(pred_any & true_any, distance, one_empty)


class HD95(PerSampleMetric):
    """HD95 per sample and class (see :func:`hd95`), averaged over samples.

    ``compute`` returns the mean over samples of the per-sample mean over reported classes
    (``"macro"``), or the per-class means over samples (``"none"``); ``per_sample()`` returns the
    ``(N, C_reported)`` table.

    Args:
        num_classes: number of classes, at least 2.
        include_background: report class 0 as well.
        average: ``"macro"`` or ``"none"``.
    """

    higher_is_better = False

    def update(self, pred: Tensor, labels: Tensor, spacing: Spacing = None) -> None:
        """Add a batch: logits ``(N, C, *spatial)`` or a prediction ``(N, *spatial)``, labels ``(N, *spatial)``.

        ``spacing`` is the pixel spacing of this batch, as in :func:`hd95`.
        """
        self._append(
            hd95(pred, labels, self.num_classes, include_background=self.include_background, spacing=spacing)
        )
