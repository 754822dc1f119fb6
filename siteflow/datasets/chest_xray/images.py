"""Reading and checking chest radiographs as grey levels in [0, 1]: JPEG / PNG through
Pillow (:mod:`siteflow.datasets.image_files`), DICOM through SimpleITK. Every problem of a
file is a :class:`~siteflow.datasets.errors.DataError` naming it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siteflow.core.extras import optional_module
from siteflow.datasets.errors import DataError
from siteflow.datasets.image_files import (
    blamed_on,
    check_image,
    read_pixels,
    require_file,
    require_within_bound,
)

sitk = optional_module("SimpleITK", "volumes", "reading DICOM chest X-rays")

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is read as DICOM (by its suffix)."""
    return path.suffix.lower() in DICOM_SUFFIXES


def check_xray(path: Path) -> None:
    """Preflight of one radiograph file, as :func:`read_xray` checks it but without decoding
    its pixels where the format allows (see :func:`~siteflow.datasets.image_files.check_image`
    and :func:`open_dicom`). Raises DataError naming ``path``."""
    if is_dicom(path):
        open_dicom(path)
    else:
        check_image(path)


def read_xray(path: Path) -> np.ndarray:
    """The radiograph at ``path`` as float32 (H, W) in [0, 1], 0 black (air) and 1 white.

    JPEG / PNG: 8-bit grey (colour is converted to grey) scaled by 1/255, 16-bit grey by
    1/65535 (the modes accepted: see :mod:`siteflow.datasets.image_files`). DICOM: see
    :func:`read_dicom`.
    """
    if is_dicom(path):
        return read_dicom(path)
    grey = read_pixels(path, 1)[..., 0]
    return grey.astype(np.float32) / np.iinfo(grey.dtype).max


def xray_tensor(grey: np.ndarray, img_size: tuple[int, int] | None, out_range: Sequence[float], channels: int) -> torch.Tensor:
    """float32 (``channels``, H, W) in ``out_range`` of grey levels float32 (H, W) in [0, 1]
    (a radiograph), resized bilinearly (Pillow's filter) to ``img_size`` when given."""
    if img_size is not None and grey.shape != tuple(img_size):
        picture = Image.fromarray(grey).resize(tuple(img_size)[::-1], Image.Resampling.BILINEAR)
        grey = np.asarray(picture, dtype=np.float32)
    low, high = out_range
    image = torch.from_numpy(np.ascontiguousarray(grey * (high - low) + low))
    return image.unsqueeze(0).expand(channels, -1, -1).contiguous()


def open_dicom(path: Path) -> sitk.ImageFileReader:
    """A SimpleITK reader of the DICOM file at ``path`` with its header read and checked:
    one frame of one grey component, within the decompression-bomb bound
    (``PIL.Image.MAX_IMAGE_PIXELS``). Raises DataError naming ``path`` when it is missing,
    empty, truncated, not DICOM, or not one grey image."""
    require_file(path, "DICOM")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with blamed_on(path, "DICOM"):
        reader.ReadImageInformation()
    size = reader.GetSize()
    frames = size[2] if len(size) > 2 else 1
    if frames != 1 or reader.GetNumberOfComponents() != 1:
        raise DataError(
            f"DICOM {path} holds {frames} frame(s) of {reader.GetNumberOfComponents()} "
            f"component(s) per pixel, not one grey image",
            paths=[path],
        )
    require_within_bound(path, "DICOM", size[0], size[1])
    return reader


def read_dicom(path: Path) -> np.ndarray:
    """A single-frame grey DICOM file as float32 (H, W) in [0, 1], 0 black and 1 white.

    The pixel values (after the modality rescale, which SimpleITK applies) are windowed to the
    range stored in the file, its minimum to 0 and its maximum to 1. Polarity: a
    PhotometricInterpretation of MONOCHROME1 (minimum displayed white) is converted to
    MONOCHROME2 by SimpleITK's reader itself (ITK's GDCM reader inverts such files, ITK 5.1
    and later), so the result is always "higher is whiter"; a test pins this behaviour.

    Raises DataError naming the file for any problem (see :func:`open_dicom`).
    """
    reader = open_dicom(path)
    with blamed_on(path, "DICOM"):
        pixels = sitk.GetArrayFromImage(reader.Execute())
    pixels = pixels.reshape(pixels.shape[-2:]).astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
