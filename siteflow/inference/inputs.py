"""The inputs of ``siteflow-infer``: listing them (files and folders) and reading one as the
model's input, with what is needed to map the prediction back onto its own grid.

2D images: PNG, JPEG, TIFF, PPM/PGM, BMP, GIF (and DICOM radiographs for an X-ray model).
Volumes: NIfTI, MetaImage, NRRD files, and DICOM series, a folder per series. A folder given
is searched (sorted, recursively) for these; a folder holding DICOM files is one series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from siteflow.core.extras import optional_module
from siteflow.datasets import DataError
from siteflow.datasets.chest_xray.inputs import XrayInput
from siteflow.datasets.volumes.readers import VOLUME_SUFFIXES, channels_of, read_image, volume_stem, volume_suffix
from siteflow.inference.recipe import ModelRecipe

sitk = optional_module("SimpleITK", "volumes", "reading NIfTI and DICOM inputs")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".bmp", ".gif")
"""The file suffixes read as 2D images."""
DICOM_SUFFIX = ".dcm"

InputKind = Literal["image", "volume", "dicom_series"]


class InputError(ValueError):
    """The inputs or the output folder given cannot be used (the message names the path)."""


@dataclass(frozen=True)
class InputItem:
    """One input: ``path`` a file or a DICOM series folder; ``name`` its outputs' name without
    suffix, relative to the output folder (the input's path below the folder it was found in)."""

    path: Path
    name: Path
    kind: InputKind


@dataclass
class ReadInput:
    """An input read and preprocessed.

    Attributes:
        item: the input.
        image: the model's input float32 (C, h, w) or (C, D, H, W).
        native: 2D: the image's own (H, W), which the prediction is resized back to.
        spacing: the pixel or voxel size in mm, (H, W) or (D, H, W); None where unknown.
        source: volumes: the input's first channel (its grid: size, spacing, origin, direction).
        grid: volumes: the preprocessed grid that ``image`` lies on.
        dicom_files: a DICOM series: its files in the order of the volume's slices.
    """

    item: InputItem
    image: torch.Tensor
    native: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    source: sitk.Image | None = None
    grid: sitk.Image | None = None
    dicom_files: list[Path] | None = None


def list_inputs(paths: Sequence[Path], spatial_dims: int) -> list[InputItem]:
    """The inputs found in ``paths`` (files, folders) for a model of ``spatial_dims`` (2: a
    DICOM file is an image; 3: a folder holding DICOM files is a series).

    Raises InputError naming the path for a path that does not exist, a file of an unknown
    kind given by name, or a folder with no input.
    """
    items: list[InputItem] = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"input {path} does not exist")
        if path.is_file():
            kind = _kind_of_file(path, spatial_dims)
            if kind is None:
                known = ", ".join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)
                raise InputError(f"input {path} is not an image or volume file siteflow-infer reads ({known}, or a DICOM series folder)")
            items.append(InputItem(path, Path(_stem(path)), kind))
            continue
        found = _search(path, path, spatial_dims)
        if not found:
            raise InputError(f"input folder {path} holds no image, volume or DICOM series")
        items.extend(found)
    return items


def _search(folder: Path, root: Path, spatial_dims: int) -> list[InputItem]:
    """The inputs in ``folder`` (below ``root``), sorted, recursively."""
    if spatial_dims == 3 and _holds_dicom(folder):
        return [InputItem(folder, Path(folder.name) if folder == root else folder.relative_to(root), "dicom_series")]
    items = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            items.extend(_search(child, root, spatial_dims))
        elif (kind := _kind_of_file(child, spatial_dims)) is not None:
            items.append(InputItem(child, child.relative_to(root).parent / _stem(child), kind))
    return items


def _holds_dicom(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM files: ``.dcm`` files, or files of no known image or
    volume suffix (DICOM files often have none) that GDCM reads as a series."""
    files = [child for child in folder.iterdir() if child.is_file() and not child.name.startswith(".")]
    if any(child.suffix.lower() == DICOM_SUFFIX for child in files):
        return True
    unknown = [child for child in files if _kind_of_file(child, 3) is None]
    return bool(unknown) and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _kind_of_file(path: Path, spatial_dims: int) -> InputKind | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or (suffix == DICOM_SUFFIX and spatial_dims == 2):
        return "image"
    return "volume" if volume_suffix(path) is not None else None


def _stem(path: Path) -> str:
    return volume_stem(path) if volume_suffix(path) else path.stem


def read_input(item: InputItem, recipe: ModelRecipe) -> ReadInput:
    """``item`` read and preprocessed as the model's training data was (``recipe.input``).

    Raises DataError naming the file for an unreadable file, an input of the wrong kind (a
    volume for a 2D model, an image for a 3D one), a folder with several DICOM series, or
    channels that are not the model's.
    """
    preprocessing = recipe.input
    if preprocessing.spatial_dims == 2:
        if item.kind != "image":
            raise DataError(f"input {item.path} is a volume; this model segments or classifies 2D images", paths=[item.path])
        if item.path.suffix.lower() == DICOM_SUFFIX and not isinstance(preprocessing, XrayInput):
            raise DataError(f"input {item.path} is a DICOM file; this model reads PNG, JPEG, TIFF or PPM images", paths=[item.path])
        image, native = preprocessing(item.path)
        return ReadInput(item, image, tuple(native))
    if item.kind == "image":
        raise DataError(f"input {item.path} is a 2D image; this model takes volumes (NIfTI, MHA, NRRD, DICOM series)", paths=[item.path])
    files = None
    if item.kind == "dicom_series":
        source, files = read_series(item.path)
    else:
        source = read_image(item.path)
    channels = channels_of(source, item.path)
    if len(channels) != preprocessing.channels:
        raise DataError(
            f"input {item.path} has {len(channels)} channels; the model takes {preprocessing.channels}", paths=[item.path]
        )
    image, grid = preprocessing(channels)
    first = channels[0]
    return ReadInput(item, image, tuple(first.GetSize()[::-1]), tuple(first.GetSpacing()[::-1]), first, grid, files)


def read_series(folder: Path) -> tuple[sitk.Image, list[Path]]:
    """The DICOM series in ``folder`` and its files in slice order.

    Raises DataError naming ``folder`` when it holds no series or several."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"DICOM series {folder}: the folder holds no readable DICOM series", paths=[folder])
    if len(series) > 1:
        raise DataError(
            f"DICOM folder {folder} holds {len(series)} series ({', '.join(series)}): give one folder per series",
            paths=[folder],
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute(), [Path(f) for f in files]
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DataError(f"DICOM series {folder} cannot be read by SimpleITK: {detail}", paths=[folder]) from None
