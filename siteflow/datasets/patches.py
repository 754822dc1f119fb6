"""Training patches: where a patch is cut from an image, with foreground oversampling as
nnU-Net does it (a share of the patches centred on a random foreground pixel, the rest placed
uniformly), and cutting windows out of arrays.

A patch always lies inside its image: a patch larger than an image is refused (see
:func:`require_patch_fits`), and a patch centred on a foreground pixel near the border is
shifted just enough to stay inside (the pixel stays in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siteflow.datasets.errors import DataError

Size = tuple[int, int]
Point = tuple[int, int]

WINDOW_FACTOR = 2
"""Spatial augmentation of a patch runs on a square window of ``WINDOW_FACTOR`` times the
patch's longer side around it, then the patch is cut from the window's centre: rotation about
the centre needs sqrt(2) times the side, zooming out to 0.7 a further 1 / 0.7. Pixels beyond
the window count as outside the image."""


def checked_patch_size(value: Sequence[int] | None, img_size: Size | None, key: str = "patch_size") -> Size | None:
    """(height, width) of a ``patch_size`` option, None for None.

    Raises ValueError naming ``key`` unless it is two sizes of at least 1, and when it is
    larger than ``img_size`` (the size every image is resized to), if set.
    """
    if value is None:
        return None
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{key} must be [height, width] > 0, not {list(value)!r}")
    size = int(value[0]), int(value[1])
    if img_size is not None and not fits(size, img_size):
        raise ValueError(
            f"{key} {list(size)} is larger than img_size {list(img_size)}, the size every image is resized to; "
            f"lower patch_size or raise img_size"
        )
    return size


def checked_foreground_share(value: float, key: str = "foreground_share") -> float:
    """A ``foreground_share`` option, checked: ValueError naming ``key`` unless in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be in [0, 1] (the share of patches centred on foreground), not {value!r}")
    return float(value)


def fits(patch: Size, size: Size) -> bool:
    """Whether a patch of (height, width) ``patch`` fits in an image of (height, width) ``size``."""
    return patch[0] <= size[0] and patch[1] <= size[1]


def require_patch_fits(patch: Size, size: Size, image: Path) -> None:
    """Raises DataError naming ``image`` (of (height, width) ``size``, as training reads it)
    when a patch of ``patch`` does not fit in it."""
    if not fits(patch, size):
        raise DataError(
            f"image {image} is {size[1]}x{size[0]} pixels (width x height), smaller than patch_size "
            f"{list(patch)} (height, width); lower patch_size or set img_size",
            paths=[image],
        )


class PatchSampler:
    """Chooses the centre of a training patch of ``size`` = (height, width).

    With a generator, a patch is centred on a foreground pixel (a label neither 0 nor
    ``ignore_index``, drawn uniformly among them) with probability ``foreground_share``, and
    placed uniformly among the positions inside the image otherwise (also when the label has
    no foreground). Without one (a deterministic item), it is the image's centre.

    Args:
        size: (height, width) of the patches.
        foreground_share: in [0, 1]; nnU-Net uses 1/3.
        ignore_index: the label value of ignored pixels (not foreground), or None.
    """

    def __init__(self, size: Size, foreground_share: float, ignore_index: int | None) -> None:
        self.size = size
        self.foreground_share = foreground_share
        self.ignore_index = ignore_index

    @property
    def window(self) -> Size:
        """(height, width) of the window that spatial augmentation sees (:data:`WINDOW_FACTOR`)."""
        side = WINDOW_FACTOR * max(self.size)
        return side, side

    def centre(self, label: np.ndarray, rng: np.random.Generator | None) -> Point:
        """(row, column) of the centre of a patch of ``label`` (H, W) int64, at least the
        patch's size; the patch covers rows ``row - h // 2 .. row - h // 2 + h - 1`` (columns
        alike) and lies inside the image."""
        height, width = label.shape
        if rng is None:
            return self._inside((height // 2, width // 2), label.shape)
        if rng.random() < self.foreground_share:
            foreground = label != 0
            if self.ignore_index is not None:
                foreground &= label != self.ignore_index
            pixels = np.flatnonzero(foreground)
            if len(pixels):
                row, column = divmod(int(pixels[rng.integers(len(pixels))]), width)
                return self._inside((row, column), label.shape)
        h, w = self.size
        return int(rng.integers(h // 2, height - h + h // 2 + 1)), int(rng.integers(w // 2, width - w + w // 2 + 1))

    def _inside(self, point: Point, shape: tuple[int, ...]) -> Point:
        """``point`` moved the least so that the patch centred there lies inside ``shape``."""
        h, w = self.size
        return min(max(point[0], h // 2), shape[0] - h + h // 2), min(max(point[1], w // 2), shape[1] - w + w // 2)


def cut(array: np.ndarray, centre: Point, size: Size, fill: float) -> np.ndarray:
    """The window of ``size`` = (height, width) of ``array`` (H, W, ...) centred on ``centre``
    (rows ``centre[0] - height // 2`` on, columns alike), ``fill`` where it leaves the array;
    a copy, of ``array``'s dtype."""
    top, left = centre[0] - size[0] // 2, centre[1] - size[1] // 2
    window = np.full((*size, *array.shape[2:]), fill, dtype=array.dtype)
    rows = slice(max(top, 0), min(top + size[0], array.shape[0]))
    columns = slice(max(left, 0), min(left + size[1], array.shape[1]))
    window[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left] = array[rows, columns]
    return window


def centre_of(shape: Sequence[int]) -> Point:
    """The centre (row, column) of an array of ``shape`` (H, W, ...), as :func:`cut` centres."""
    return shape[0] // 2, shape[1] // 2

