"""Reading the files of segmentation datasets: listing, pairing, decoding masks, resizing.

Every loader of :mod:`siteflow.datasets` goes through these few functions, so that the
error messages and the conventions (sorted listings, nearest-level mask decoding) are the
same for every layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# A mask pixel "fits no class" when it is farther than a quarter of the smallest gap between
# two class levels from every level; a mask with more such pixels than this fraction is
# refused (a few are expected on resampled edges).
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

    Raises FileNotFoundError naming the folder when it is missing or holds no image.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths = sorted(
        path
        for path in folder.glob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not paths:
        raise FileNotFoundError(f"no images matching {pattern!r} in {folder}")
    return paths


def require_partner(path: Path, image: Path, what: str) -> Path:
    """``path`` if it is a file, else FileNotFoundError saying that ``image`` has no ``what``."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} for image {image}: {path} does not exist")
    return path


def find_same_stem(image: Path, folder: Path, what: str) -> Path:
    """The file of ``folder`` named like ``image``, or with its stem and another image suffix.

    Raises FileNotFoundError naming the expected file when there is none.
    """
    candidates = [folder / image.name] + [folder / (image.stem + s) for s in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return require_partner(candidates[0], image, what)


def read_rgb_or_grey(path: Path, channels: int) -> Image.Image:
    """The image at ``path`` as a Pillow image with 3 (RGB) or 1 (grey) channels."""
    with Image.open(path) as image:
        return image.convert("RGB" if channels == 3 else "L")


def read_grey(path: Path) -> np.ndarray:
    """The image at ``path`` as grey levels, uint8 (H, W), whatever its stored mode."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def grey_to_class_ids(grey: np.ndarray, levels: tuple[int, ...], path: Path) -> np.ndarray:
    """Class ids, int64 (H, W), of a grey mask uint8 (H, W): each pixel gets the id of the
    nearest level (``levels[c]`` is the grey value of class ``c``).

    Raises ValueError naming ``path`` when the mask does not follow the convention: values
    that look like class ids (all in 1..K-1 or 0), or too many pixels far from every level.
    """
    values = grey.astype(np.int16)
    top = int(values.max())
    if 0 < top < len(levels):
        found = sorted(int(v) for v in np.unique(values))
        raise ValueError(
            f"mask {path} holds only the values {found}, which look like class ids; "
            f"expected the grey levels {levels} (class 0, 1, ...)"
        )
    distance = np.abs(values[..., None] - np.asarray(levels, dtype=np.int16))
    nearest = distance.min(axis=-1)
    tolerance = min(abs(a - b) for i, a in enumerate(levels) for b in levels[i + 1 :]) / 4
    off_level = nearest > tolerance
    if off_level.mean() > OFF_LEVEL_TOLERATED_FRACTION:
        examples = [int(v) for v in np.unique(values[off_level])[:8]]
        raise ValueError(
            f"mask {path}: {off_level.mean():.0%} of the pixels fit no class (more than "
            f"{tolerance:g} grey levels from every class level {levels}), e.g. {examples}"
        )
    return distance.argmin(axis=-1).astype(np.int64)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) array to ``size`` = (height, width), sampling at
    pixel centres; values are copied, never blended, so class ids stay valid."""
    height, width = array.shape
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    return array[np.ix_(rows, cols)]
