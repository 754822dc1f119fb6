"""The files of segmentation datasets: listing, pairing, decoding masks, resizing (opening
and reading image files: :mod:`siteflow.datasets.image_files`).

Every loader of :mod:`siteflow.datasets` goes through these few functions, so that the
error messages and the conventions (sorted listings, nearest-level mask decoding) are the
same for every layout. Every problem of the files is a
:class:`~siteflow.datasets.errors.DataError` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siteflow.datasets.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# The tolerance of mask decoding: a mask pixel "fits no class" when it is farther than a
# quarter of the smallest gap between two class levels from every level (DoFE's 255 / 128 / 0:
# 31.75 grey levels; binary 0 / 255: 63.75), which JPEG noise and resampling stay within in
# flat areas; a mask with more such pixels than this fraction is refused (blended or ringing
# pixels are expected on edges, e.g. of thin vessels).
OFF_LEVEL_TOLERATED_FRACTION = 0.05


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample: image, class mask and, where the release has one, a field of
    view mask (non-zero inside the field of view)."""

    id: str
    image: Path
    mask: Path
    fov: Path | None = None


def list_images(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files of ``folder`` that match the glob ``pattern``, sorted by name.

    Raises MissingFileError (a FileNotFoundError) naming the folder when it is missing or
    holds no image.
    """
    if not folder.is_dir():
        raise MissingFileError(f"image folder {folder} does not exist", paths=[folder])
    paths = sorted(
        path
        for path in folder.glob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not paths:
        raise MissingFileError(f"no images matching {pattern!r} in {folder}", paths=[folder])
    return paths


def require_partner(path: Path, image: Path, what: str) -> Path:
    """``path`` if it is a file, else MissingFileError (a FileNotFoundError) saying that
    ``image`` has no ``what``."""
    if not path.is_file():
        raise MissingFileError(f"no {what} for image {image}: {path} does not exist", paths=[path])
    return path


def find_same_stem(image: Path, folder: Path, what: str) -> Path:
    """The file of ``folder`` named like ``image``, or with its stem and another image suffix.

    Raises MissingFileError naming the expected file when there is none.
    """
    candidates = [folder / image.name] + [folder / (image.stem + s) for s in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return require_partner(candidates[0], image, what)


def grey_to_class_ids(grey: np.ndarray, levels: tuple[int, ...], path: Path) -> np.ndarray:
    """Class ids, int64 (H, W), of a grey mask uint8 (H, W): each pixel gets the id of the
    nearest level (``levels[c]`` is the grey value of class ``c``).

    Raises DataError naming ``path`` when the mask does not follow the convention: values
    that look like class ids (all in 1..K-1 or 0), or more than
    :data:`OFF_LEVEL_TOLERATED_FRACTION` of the pixels far from every level (a foreign grey
    level, another dataset's convention, a photograph).
    """
    top = int(grey.max())
    if 0 < top < len(levels):
        found = sorted(int(v) for v in np.unique(grey))
        raise DataError(
            f"mask {path} holds only the values {found}, which look like class ids; "
            f"expected the grey levels {levels} (class 0, 1, ...)",
            paths=[path],
        )
    # Decided once per grey value (256, K), then looked up for every pixel.
    distance = np.abs(np.arange(256)[:, None] - np.asarray(levels)[None, :])
    tolerance = min(abs(a - b) for i, a in enumerate(levels) for b in levels[i + 1 :]) / 4
    off_level = (distance.min(axis=1) > tolerance)[grey]
    if off_level.mean() > OFF_LEVEL_TOLERATED_FRACTION:
        examples = [int(v) for v in np.unique(grey[off_level])[:8]]
        raise DataError(
            f"mask {path}: {off_level.mean():.0%} of the pixels fit no class (more than "
            f"{tolerance:g} grey levels from every class level {levels}), e.g. {examples}",
            paths=[path],
        )
    return distance.argmin(axis=1)[grey].astype(np.int64, copy=False)


def require_image_size(grid: np.ndarray, path: Path, what: str, image: Path, size: tuple[int, int]) -> None:
    """Raises DataError naming ``path`` (a ``what``, e.g. "mask") unless ``grid`` (H, W), read
    from it, has the size of ``image``, ``size`` = (width, height)."""
    height, width = grid.shape
    if (width, height) != size:
        raise DataError(
            f"{what} {path} is {width}x{height} pixels but image {image} is {size[0]}x{size[1]}",
            paths=[path],
        )


def resize_bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (Pillow's filter) of ``pixels`` (H, W, C) to ``size`` = (height, width),
    channel by channel: uint8 stays uint8, exactly as Pillow resizes an 8-bit image; uint16
    becomes float32 (16-bit grey is resampled as 32-bit float, values kept in 0..65535)."""
    bands = pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    resized = [
        Image.fromarray(np.ascontiguousarray(bands[..., c])).resize(size[::-1], Image.Resampling.BILINEAR)
        for c in range(bands.shape[-1])
    ]
    return np.stack([np.asarray(band) for band in resized], axis=-1)


def unit_pixels(pixels: np.ndarray, img_size: tuple[int, int] | None) -> np.ndarray:
    """Decoded pixels (H, W, C) of :func:`~siteflow.datasets.image_files.read_pixels` as the
    segmentation datasets keep them: uint8 stays uint8, 16-bit becomes float32 in [0, 1]; then
    resized bilinearly to ``img_size`` (height, width), when given."""
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
    return pixels if img_size is None else resize_bilinear(pixels, img_size)


def scaled_tensor(pixels: np.ndarray, out_range: Sequence[float]) -> torch.Tensor:
    """float32 (C, H, W) of ``pixels`` (H, W, C), uint8 or float32 in [0, 1], scaled so that
    black and white become ``out_range``."""
    low, high = out_range
    white = 255.0 if pixels.dtype == np.uint8 else 1.0
    array = pixels.astype(np.float32) * ((high - low) / white) + low
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) array to ``size`` = (height, width), sampling at
    pixel centres; values are copied, never blended, so class ids stay valid."""
    height, width = array.shape
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    return array[np.ix_(rows, cols)]
