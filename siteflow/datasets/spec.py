"""What a site's data looks like, known from its config alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    """What the items of a site dataset look like, computed from its config options without
    reading (or generating) any file: a Flower server, which holds no data, builds its model
    and metrics from it. ``DATASETS.get(name).describe(**kwargs)`` gives it.

    Attributes:
        task: ``"segmentation"`` or ``"multilabel"``.
        class_names: segmentation: one name per class, background first (label ids 0 ... K-1
            of an item's ``label`` (H, W)); multi-label data: the site's label names in order,
            one per entry of an item's ``labels`` (L,).
        in_channels: C of an item's ``image`` (C, H, W), or (C, D, H, W) for volumes.
        image_size: (H, W) that every image is resized to; None when images keep their
            native size (volumes: always, they are resampled to a voxel spacing).
        ignore_index: the label value that losses and metrics skip, or None.
        patch_size: segmentation: (H, W) of the patches that training cuts from the images
            (see :class:`~siteflow.datasets.base.SegmentationDataset`), which evaluation uses as
            its sliding window; (D, H, W) for volumes; None when training sees whole images.
        spatial_dims: the spatial axes of an item's ``image``: 2 for images (H, W), 3 for
            volumes (D, H, W); the model must convolve over as many.
    """

    task: str
    class_names: tuple[str, ...]
    in_channels: int
    image_size: tuple[int, ...] | None
    ignore_index: int | None
    patch_size: tuple[int, ...] | None = None
    spatial_dims: int = 2


def image_size(img_size: Sequence[int] | None) -> tuple[int, int] | None:
    """(height, width) of an ``img_size`` option, None for None.

    Raises ValueError unless ``img_size`` is two sizes of at least 1.
    """
    if img_size is None:
        return None
    if len(img_size) != 2 or min(img_size) < 1:
        raise ValueError(f"img_size must be [height, width] > 0, not {img_size!r}")
    return int(img_size[0]), int(img_size[1])
