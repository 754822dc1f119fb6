"""Reading chest radiographs as grey levels in [0, 1]: JPEG / PNG through Pillow, DICOM
through SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


def read_xray(path: Path) -> np.ndarray:
    """The radiograph at ``path`` as float32 (H, W) in [0, 1], 0 black (air) and 1 white.

    JPEG / PNG: 8-bit grey (colour is converted to grey) scaled by 1/255, 16-bit grey by
    1/65535. DICOM: see :func:`read_dicom`.
    """
    if path.suffix.lower() in DICOM_SUFFIXES:
        return read_dicom(path)
    with Image.open(path) as image:
        if image.mode in SIXTEEN_BIT_MODES:
            return np.asarray(image, dtype=np.float32) / 65535.0
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def read_dicom(path: Path) -> np.ndarray:
    """A single-frame grey DICOM file as float32 (H, W) in [0, 1], 0 black and 1 white.

    The pixel values (after the modality rescale, which SimpleITK applies) are windowed to the
    range stored in the file, its minimum to 0 and its maximum to 1. Polarity: a
    PhotometricInterpretation of MONOCHROME1 (minimum displayed white) is converted to
    MONOCHROME2 by SimpleITK's reader itself (ITK's GDCM reader inverts such files, ITK 5.1
    and later), so the result is always "higher is whiter"; a test pins this behaviour.

    Raises ValueError naming the file for a multi-frame or colour image.
    """
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ValueError(f"DICOM {path} holds pixels of shape {pixels.shape}, not one grey image")
    pixels = pixels.astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
