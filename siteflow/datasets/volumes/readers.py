"""Reading volumes through SimpleITK: NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``,
``.mhd``), NRRD (``.nrrd``, ``.nhdr``) files and DICOM series (a folder per series), each
returned as a list of 3D scalar images, one per channel, that keep their spacing, origin and
direction. Every problem is a :class:`~siteflow.datasets.errors.DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siteflow.core.extras import optional_module
from siteflow.datasets.errors import DataError

sitk = optional_module("SimpleITK", "volumes", "reading volumes")

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
"""The file suffixes read as volumes (a folder is read as a DICOM series)."""
GEOMETRY_TOLERANCE = 1e-4
"""Relative tolerance (of the spacing) under which two grids' spacing, origin and direction agree."""


def volume_suffix(path: Path) -> str | None:
    """The suffix of :data:`VOLUME_SUFFIXES` that ``path``'s name ends with, or None."""
    name = path.name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def volume_stem(path: Path) -> str:
    """``path``'s name without its volume suffix (a DICOM folder: its name)."""
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.is_file() else path.name


def is_volume(path: Path) -> bool:
    """Whether ``path`` is a volume file (by suffix) or a folder (a DICOM series)."""
    return path.is_dir() or (path.is_file() and volume_suffix(path) is not None)


def read_image(path: Path) -> sitk.Image:
    """The image of a volume file or of a DICOM series folder, as SimpleITK reads it.

    Raises DataError naming ``path`` when it cannot be read, or a folder holds no DICOM series.
    """
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise DataError(f"DICOM series {path}: the folder holds no readable DICOM series", paths=[path])
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DataError(f"volume {path} cannot be read by SimpleITK: {detail}", paths=[path]) from None


def channels_of(image: sitk.Image, path: Path) -> list[sitk.Image]:
    """The 3D scalar channels of ``image`` (read from ``path``): itself; the components of a
    vector image; or the 3D volumes along the 4th axis of a 4D image (the Decathlon stores
    multi-modal volumes so). Each float32, with the image's spacing, origin and direction.

    Raises DataError naming ``path`` for a 2D image (a volume is expected) or more than 4 axes.
    """
    dimension = image.GetDimension()
    if dimension == 2 or min(image.GetSize()[:3]) == 1:
        raise DataError(f"volume {path} is a 2D image of {list(image.GetSize())} pixels; a 3D volume is expected", paths=[path])
    if dimension == 4:
        size = list(image.GetSize())
        return [
            sitk.Cast(sitk.Extract(image, [*size[:3], 0], [0, 0, 0, index]), sitk.sitkFloat32)
            for index in range(size[3])
        ]
    if dimension != 3:
        raise DataError(f"volume {path} has {dimension} axes; a 3D volume (or 4D: channels last) is expected", paths=[path])
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [
            sitk.Cast(sitk.VectorIndexSelectionCast(image, index), sitk.sitkFloat32)
            for index in range(image.GetNumberOfComponentsPerPixel())
        ]
    return [sitk.Cast(image, sitk.sitkFloat32)]


def read_channels(paths: list[Path]) -> list[sitk.Image]:
    """The channels of a case stored in one file (3D, 4D or vector) or in one file per channel
    (nnU-Net's ``<case>_0000.nii.gz, <case>_0001.nii.gz, ...``), all on one grid.

    Raises DataError naming the file that cannot be read, is 2D, or whose grid differs from
    the first file's.
    """
    channels = []
    for path in paths:
        found = channels_of(read_image(path), path)
        if channels:
            require_same_grid(found[0], path, channels[0], paths[0], "channel")
        channels.extend(found)
    return channels


def read_label(path: Path, reference: sitk.Image, image_path: Path) -> np.ndarray:
    """The label volume at ``path`` as int64 (D, H, W) raw values.

    Raises DataError naming ``path`` when it cannot be read, is not one scalar 3D volume, holds
    non-integer values, or its grid (size, spacing, origin, direction) differs from that of
    ``reference``, the image read from ``image_path``.
    """
    image = read_image(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"label {path} has {image.GetDimension()} axes and {image.GetNumberOfComponentsPerPixel()} components; "
            "a scalar 3D volume is expected",
            paths=[path],
        )
    require_same_grid(image, path, reference, image_path, "label")
    values = sitk.GetArrayFromImage(image)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise DataError(f"label {path} holds non-integer values; class ids are expected", paths=[path])
    return values.astype(np.int64)


def require_same_grid(image: sitk.Image, path: Path, reference: sitk.Image, reference_path: Path, what: str) -> None:
    """Raises DataError naming ``path`` (a ``what``: label, channel) unless the 3D ``image`` lies
    on the grid of the 3D ``reference`` (read from ``reference_path``): the same size, and spacing,
    origin and direction equal within :data:`GEOMETRY_TOLERANCE` of the spacing."""
    if image.GetSize() != reference.GetSize():
        raise DataError(
            f"{what} {path} has {list(image.GetSize())} voxels but image {reference_path} has "
            f"{list(reference.GetSize())}",
            paths=[path],
        )
    tolerance = GEOMETRY_TOLERANCE * max(reference.GetSpacing())
    for name in ("Spacing", "Origin", "Direction"):
        mine = np.asarray(getattr(image, f"Get{name}")())
        theirs = np.asarray(getattr(reference, f"Get{name}")())
        if not np.allclose(mine, theirs, atol=tolerance, rtol=0):
            raise DataError(
                f"{what} {path}: its {name.lower()} {np.round(mine, 4).tolist()} differs from that of image "
                f"{reference_path}, {np.round(theirs, 4).tolist()}",
                paths=[path],
            )
