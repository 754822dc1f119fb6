"""Training patches: where a patch is cut from an image, with foreground oversampling as
nnU-Net does it (a share of the patches centred on a random foreground pixel, the rest placed
uniformly), and cutting windows out of arrays.

Everything here works on 2D images (height, width) and on 3D volumes (depth, height, width)
alike: a size, a point and a window have one entry per spatial axis.

A patch always lies inside its image: a patch larger than an image is refused (see
:func:`require_patch_fits`), and a patch centred on a foreground pixel near the border is
shifted just enough to stay inside (the pixel stays in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siteflow.datasets.errors import DataError

Size = tuple[int, ...]
Point = tuple[int, ...]
AXES = {2: "[height, width]", 3: "[depth, height, width]"}

WINDOW_FACTOR = 2
"""Spatial augmentation of a patch runs on a square window of ``WINDOW_FACTOR`` times the
patch's longer side around it, then the patch is cut from the window's centre: rotation about
the centre needs sqrt(2) times the side, zooming out to 0.7 a further 1 / 0.7. Pixels beyond
the window count as outside the image."""


def checked_patch_size(
    value: Sequence[int] | None, img_size: Size | None, key: str = "patch_size", dims: int = 2
) -> Size | None:
    """(height, width) of a ``patch_size`` option (``dims`` = 3: (depth, height, width)), None
    for None.

    Raises ValueError naming ``key`` unless it is ``dims`` sizes of at least 1, and when it is
    larger than ``img_size`` (the size every image is resized to), if set.
    """
    if value is None:
        return None
    if len(value) != dims or min(value) < 1:
        raise ValueError(f"{key} must be {AXES[dims]} > 0, not {list(value)!r}")
    size = tuple(int(side) for side in value)
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
    """Whether a patch of (height, width) ``patch`` fits in an image of (height, width) ``size``
    (any number of axes)."""
    return all(p <= s for p, s in zip(patch, size))


def require_patch_fits(patch: Size, size: Size, image: Path) -> None:
    """Raises DataError naming ``image`` (of (height, width) ``size``, as training reads it)
    when a patch of ``patch`` does not fit in it."""
    if fits(patch, size):
        return
    if len(size) == 3:
        raise DataError(
            f"volume {image} is {list(size)} voxels (depth, height, width) after preprocessing, smaller than "
            f"patch_size {list(patch)}; lower patch_size or choose a finer target spacing",
            paths=[image],
        )
    raise DataError(
        f"image {image} is {size[1]}x{size[0]} pixels (width x height), smaller than patch_size "
        f"{list(patch)} (height, width); lower patch_size or set img_size",
        paths=[image],
    )


class PatchSampler:
    """Chooses the centre of a training patch of ``size`` = (height, width), or (depth,
    height, width) for volumes.

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
        return (side,) * len(self.size)

    def centre(self, label: np.ndarray, rng: np.random.Generator | None) -> Point:
        """(row, column) of the centre of a patch of ``label`` (H, W) int64 ((D, H, W) for a
        volume: (slice, row, column)), at least the patch's size; the patch covers rows
        ``row - h // 2 .. row - h // 2 + h - 1`` (other axes alike) and lies inside the image."""
        if rng is None:
            return self._inside(tuple(side // 2 for side in label.shape), label.shape)
        if rng.random() < self.foreground_share:
            foreground = label != 0
            if self.ignore_index is not None:
                foreground &= label != self.ignore_index
            pixels = np.flatnonzero(foreground)
            if len(pixels):
                point = np.unravel_index(int(pixels[rng.integers(len(pixels))]), label.shape)
                return self._inside(tuple(int(p) for p in point), label.shape)
        return tuple(int(rng.integers(p // 2, s - p + p // 2 + 1)) for p, s in zip(self.size, label.shape))

    def _inside(self, point: Point, shape: tuple[int, ...]) -> Point:
        """``point`` moved the least so that the patch centred there lies inside ``shape``."""
        return tuple(min(max(x, p // 2), s - p + p // 2) for x, p, s in zip(point, self.size, shape))


def cut(array: np.ndarray, centre: Point, size: Size, fill: float) -> np.ndarray:
    """The window of ``size`` = (height, width) of ``array`` (H, W, ...) centred on ``centre``
    (rows ``centre[0] - height // 2`` on, columns alike; with three sizes, the first three
    axes), ``fill`` where it leaves the array; a copy, of ``array``'s dtype."""
    starts = [c - s // 2 for c, s in zip(centre, size)]
    window = np.full((*size, *array.shape[len(size):]), fill, dtype=array.dtype)
    inside = [slice(max(a, 0), min(a + s, n)) for a, s, n in zip(starts, size, array.shape)]
    window[tuple(slice(i.start - a, i.stop - a) for i, a in zip(inside, starts))] = array[tuple(inside)]
    return window


def centre_of(shape: Sequence[int]) -> Point:
    """The centre (row, column) of an array of ``shape`` (H, W, ...), as :func:`cut` centres."""
    return shape[0] // 2, shape[1] // 2

