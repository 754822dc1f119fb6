"""Opening, checking and reading image files through Pillow, so that every problem of a file
is a :class:`~siteflow.datasets.errors.DataError` naming it: missing or empty files, content
Pillow cannot identify (a text file named ``.png``), decompression bombs, truncated or
corrupt files, unsupported pixel modes.

Files are identified by their content, not their suffix (a JPEG named ``.png`` is read as
the JPEG it is). Pixel modes:

* 8-bit: ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, converted to grey or RGB by
  Pillow (a palette through its palette, colour to grey by luminance); full intensity 255.
* 8-bit with alpha: ``LA``, ``PA``, ``RGBA``, read without their alpha channel when every
  pixel is opaque (alpha 255); refused when one is not, as the colour of a transparent pixel
  means nothing.
* 16-bit grey: ``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, and ``I`` (32-bit) when its values
  lie in 0..65535: read as uint16, full intensity 65535 (never clipped to 255).
* any other mode (``F``, premultiplied ``La`` / ``RGBa``, ...) is refused.

The bound against decompression bombs is Pillow's ``Image.MAX_IMAGE_PIXELS``: an image with
more pixels is refused (Pillow itself only warns up to twice the bound).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from siteflow.datasets.errors import DataError, MissingFileError

EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "CMYK", "YCbCr"})
ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Modes whose acceptance depends on the pixel values, which the preflight therefore decodes.
VALUE_CHECKED_MODES = ALPHA_MODES | {"I"}
SIXTEEN_BIT_MAX = 65535
# The end of a JPEG is looked for in this many last bytes (room for padding after it).
JPEG_TAIL_BYTES = 1024
JPEG_END = b"\xff\xd9"


def require_file(path: Path, what: str) -> None:
    """Raises MissingFileError when ``path`` (a ``what``, e.g. "mask") is not a file, DataError
    when it is empty."""
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist", paths=[path])
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty (0 bytes)", paths=[path])


@contextmanager
def blamed_on(path: Path, what: str) -> Iterator[None]:
    """Turns any exception raised in the block (a decoder's complaint about the file) into a
    DataError naming ``path`` and the complaint; a DataError passes unchanged."""
    try:
        yield
    except DataError:
        raise
    except Exception as error:  # any failure to decode a file means the file is bad
        lines = str(error).strip().splitlines() or [""]
        complaint = f"{type(error).__name__}: {lines[-1]}"
        raise DataError(f"{what} {path} is truncated or corrupt ({complaint})", paths=[path]) from error


def open_image(path: Path, what: str) -> Image.Image:
    """``path`` opened by Pillow: its header read, its pixels not decoded yet (use it in a
    ``with`` block, which closes it).

    Raises DataError naming ``path`` when it is missing or empty, when Pillow cannot identify
    it, or when it has more pixels than ``Image.MAX_IMAGE_PIXELS``.
    """
    require_file(path, what)
    with blamed_on(path, what):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise DataError(
                f"{what} {path} exceeds the decompression-bomb bound PIL.Image.MAX_IMAGE_PIXELS "
                f"= {Image.MAX_IMAGE_PIXELS} ({error})",
                paths=[path],
            ) from error
        except Image.UnidentifiedImageError as error:
            with path.open("rb") as handle:
                start = handle.read(16)
            raise DataError(
                f"{what} {path} is not an image file Pillow can read (it starts with {start!r})",
                paths=[path],
            ) from error


def require_supported_mode(image: Image.Image, path: Path, what: str) -> None:
    """Raises DataError naming ``path`` unless ``image``'s pixel mode is one this module reads."""
    if image.mode not in EIGHT_BIT_MODES | ALPHA_MODES | SIXTEEN_BIT_MODES:
        raise DataError(
            f"{what} {path} has pixel mode {image.mode!r}, which is not supported (8-bit grey, "
            f"palette or colour, or 16-bit grey)",
            paths=[path],
        )


def check_image(path: Path, what: str = "image") -> tuple[int, int]:
    """Preflight of one image file; returns its (width, height).

    Opens it (:func:`open_image`), checks its mode, and that it is complete without decoding
    its pixels where the format allows: a PNG's chunks are walked to IEND with their CRCs,
    a JPEG must end with its end-of-image marker. Other formats, and modes whose acceptance
    depends on the values (:data:`VALUE_CHECKED_MODES`), are decoded as when read.
    """
    with open_image(path, what) as image:
        require_supported_mode(image, path, what)
        size = image.size
        structure_check = STRUCTURE_CHECKS.get(image.format or "")
        if structure_check is None or image.mode in VALUE_CHECKED_MODES:
            decode(image, 1, path, what)
        else:
            structure_check(image, path, what)
    return size


def native_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(height, width) of the image file at ``path``, from its header (see :func:`open_image`
    for the errors)."""
    with open_image(path, what) as image:
        return image.height, image.width


def read_pixels(path: Path, channels: int, what: str = "image") -> np.ndarray:
    """The pixels of the image file at ``path``, (H, W, ``channels``) (1 grey, 3 RGB): uint8
    for 8-bit files, uint16 for 16-bit grey ones (a 16-bit grey image read with 3 channels
    repeats its grey). Raises DataError naming ``path`` for any problem of the file."""
    with open_image(path, what) as image:
        require_supported_mode(image, path, what)
        return decode(image, channels, path, what)


def read_grey(path: Path, what: str = "mask") -> np.ndarray:
    """Grey levels uint8 (H, W) of a mask file at ``path``. 8-bit files are converted to grey
    (see the module's modes). 16-bit files: when every value is within 0..255 they hold 8-bit
    levels and are kept as they are; otherwise they are scaled to 8 bits (value / 257,
    rounded: 65535 -> 255, 32896 -> 128). Raises DataError naming ``path`` for any problem."""
    grey = read_pixels(path, 1, what)[..., 0]
    if grey.dtype == np.uint16 and grey.max() > 255:
        return np.round(grey / 257.0).astype(np.uint8)
    return grey.astype(np.uint8, copy=False)


def decode(image: Image.Image, channels: int, path: Path, what: str) -> np.ndarray:
    """The pixels of ``image`` (an opened file of a supported mode) as :func:`read_pixels`
    gives them, after checking the values that its mode's acceptance depends on."""
    with blamed_on(path, what):
        image.load()
    if image.mode in SIXTEEN_BIT_MODES:
        grey = sixteen_bit(image, path, what)
        return np.repeat(grey[..., None], channels, axis=-1)
    if image.mode in ALPHA_MODES:
        require_opaque(image, path, what)
    converted = image.convert("RGB" if channels == 3 else "L")
    return np.asarray(converted).reshape(image.height, image.width, channels)


def sixteen_bit(image: Image.Image, path: Path, what: str) -> np.ndarray:
    """uint16 (H, W) of a decoded 16-bit grey ``image``; raises DataError naming ``path`` when
    the values of a 32-bit ``I`` image leave 0..65535."""
    values = np.asarray(image)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > SIXTEEN_BIT_MAX:
        raise DataError(
            f"{what} {path} holds 32-bit values in {low}..{high}, outside the 16-bit range "
            f"0..{SIXTEEN_BIT_MAX}",
            paths=[path],
        )
    return values.astype(np.uint16)


def require_opaque(image: Image.Image, path: Path, what: str) -> None:
    """Raises DataError naming ``path`` when a pixel of a decoded ``image`` with an alpha
    channel is not fully opaque."""
    lowest = image.getchannel("A").getextrema()[0]
    if lowest < 255:
        raise DataError(
            f"{what} {path} has transparent pixels (mode {image.mode}, alpha down to {lowest}); "
            f"save it without an alpha channel",
            paths=[path],
        )


def verify_png(image: Image.Image, path: Path, what: str) -> None:
    """Walks the PNG chunks of ``image`` to IEND, checking their CRCs (no pixel is decoded)."""
    with blamed_on(path, what):
        image.verify()


def require_jpeg_end(image: Image.Image, path: Path, what: str) -> None:
    """Raises DataError naming ``path`` when the JPEG file does not end with its end-of-image
    marker (within its last :data:`JPEG_TAIL_BYTES` bytes): it was cut short."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - JPEG_TAIL_BYTES))
        tail = handle.read()
    if JPEG_END not in tail:
        raise DataError(f"{what} {path} is truncated (its JPEG end-of-image marker is missing)", paths=[path])


def require_within_bound(path: Path, what: str, width: int, height: int) -> None:
    """Raises DataError naming ``path`` when a ``width`` x ``height`` image has more pixels
    than ``Image.MAX_IMAGE_PIXELS`` (None: no bound), for files Pillow does not open."""
    bound = Image.MAX_IMAGE_PIXELS
    if bound is not None and width * height > bound:
        raise DataError(
            f"{what} {path} is {width}x{height} = {width * height} pixels, more than the "
            f"decompression-bomb bound PIL.Image.MAX_IMAGE_PIXELS = {bound}",
            paths=[path],
        )


# Cheap completeness checks of the formats that have one (the others are decoded).
STRUCTURE_CHECKS: dict[str, Callable[[Image.Image, Path, str], None]] = {
    "PNG": verify_png,
    "JPEG": require_jpeg_end,
}
