"""Reading weights that came from elsewhere without trusting them, and the weights' digest.

A weights file from another site (a hand-over file, a pre-trained encoder) is untrusted
input: its path may name a FIFO or a device, its header may claim any length, its values may
be NaN. :func:`read_weights` reads one safely: a regular file only (:func:`open_regular`), a
safetensors header of bounded length read only once its length is known to fit
(:func:`read_header`), tensors only (safetensors cannot run code, and a pickle or a
``torch.save`` zip is refused by its first bytes, never unpickled), finite values
(:func:`check_finite`). Each refusal is a :class:`~siteflow.core.errors.FileRefused` (or
the subclass a caller names, such as the hand-over's ``HandoverError``) naming the file and
the reason.

:func:`weights_sha256` is the canonical digest of weights, computed over the tensors rather
than the file's bytes: the hand-over manifest, the federated rounds and the exported model
card record it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO

import torch
from safetensors.torch import load as load_safetensors

from siteflow.core.errors import FileRefused
from siteflow.core.finite import first_non_finite

__all__ = ["MAX_HEADER_BYTES", "check_finite", "open_regular", "parse_weights", "read_header", "read_weights", "weights_sha256"]

MAX_HEADER_BYTES = 16 * 2**20
"""The longest safetensors header read (16 MiB). A UNet of depth 4 has a 10.6 kB header (about
100 bytes per tensor) and a hand-over manifest a few kB, so the limit leaves room for 100,000
tensors while bounding what an absurd length can cost: memory, and the time to parse it (the
safetensors format itself allows 100 MB, which takes tens of seconds to parse)."""

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@contextmanager
def open_regular(
    path: str | os.PathLike, what: str, *, refusal: type[FileRefused] = FileRefused
) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``path`` for reading if it is a regular file; yield the open file and its size.

    A path may name anything: a FIFO (opening it waits for a writer), a device (``/dev/zero``
    never ends), a directory. Anything but a regular file is refused, by its status before
    opening it and again once it is open (the path may have changed in between; the open
    itself does not wait: ``O_NONBLOCK``, which has no effect on a regular file). Callers read
    only as many bytes as the size allows, never "to the end".

    ``what`` names the file in the refusal of a file that cannot be read (``"file"``, ``"key
    file"``); an :class:`OSError` while the file is open is refused in the same words.

    Raises:
        FileRefused (``refusal``): naming ``path``: it cannot be read, or it is not a regular file.
    """
    try:
        _check_regular(path, os.stat(path).st_mode, refusal)
        descriptor = os.open(path, _FLAGS)
    except OSError as error:
        raise refusal(path, f"cannot read the {what}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        try:
            status = os.fstat(descriptor)
            _check_regular(path, status.st_mode, refusal)
            yield handle, status.st_size
        except OSError as error:
            raise refusal(path, f"cannot read the {what}: {error.strerror}") from None


def _check_regular(path: str | os.PathLike, mode: int, refusal: type[FileRefused]) -> None:
    """Refuse ``path`` unless ``mode`` (its ``st_mode``) is a regular file's, naming what it is."""
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise refusal(path, f"not a regular file but {kind}: only a regular file is read")


def read_header(
    path: str | os.PathLike, handle: BinaryIO, size: int, *, what: str = "safetensors file", refusal: type[FileRefused] = FileRefused
) -> bytes:
    """The header of the safetensors file ``path``, open as ``handle`` at its start, ``size`` bytes long.

    A safetensors file starts with the length of its JSON header (8 bytes, little-endian),
    then the header; the tensors follow. The length is checked before anything more is read.

    Raises:
        FileRefused (``refusal``): naming ``path`` (as "not a ``what``") and what the file
            seems to be instead, or the length over :data:`MAX_HEADER_BYTES`.
    """
    start = handle.read(8)
    other = _other_format(start)
    if other is not None:
        raise refusal(path, f"not a {what}: {other}")
    length = struct.unpack("<Q", start)[0] if len(start) == 8 else 0
    if length > MAX_HEADER_BYTES:
        raise refusal(path, f"not a {what}: its header length is {length:,} bytes, over the limit of {MAX_HEADER_BYTES:,}")
    if not 2 <= length <= size - 8:
        raise refusal(path, f"not a {what}: its header is cut short or absent")
    return handle.read(length)


def _other_format(start: bytes) -> str | None:
    """What a file that starts with ``start`` is, if its first bytes show another format."""
    if start.startswith(b"PK\x03\x04"):
        return "it is a zip archive, as torch.save writes (siteflow never unpickles files)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (siteflow never unpickles files)"
    return None


def parse_weights(path: str | os.PathLike, data: bytes, *, refusal: type[FileRefused] = FileRefused) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors bytes ``data`` of ``path``, on the CPU.

    Raises:
        FileRefused (``refusal``): whatever the parser raises on the untrusted bytes, named.
    """
    with torch.device("cpu"):  # a model built on the meta device (config validation) still reads real values
        try:
            return load_safetensors(data)
        except Exception as error:  # untrusted bytes: whatever the parser raises is a refusal
            raise refusal(path, f"not a valid safetensors file: {type(error).__name__}: {error}") from None


def check_finite(path: str | os.PathLike, weights: Mapping[str, torch.Tensor], *, refusal: type[FileRefused] = FileRefused) -> None:
    """Refuse the weights read from ``path`` if a floating-point or complex tensor holds a NaN
    or an infinity (which make every later step NaN), naming the first such tensor by name."""
    found = first_non_finite(weights)
    if found is not None:
        name, count = found
        raise refusal(
            path,
            f"the weights hold values that are not finite (NaN or infinity): {name!r} holds {count:,} "
            f"of {weights[name].numel():,} (the first such tensor by name)",
        )


def read_weights(path: str | os.PathLike, what: str, *, refusal: type[FileRefused] = FileRefused) -> dict[str, torch.Tensor]:
    """The tensors of the untrusted safetensors file ``path`` (a ``what``), on the CPU: a
    regular file, a bounded header, tensors only, finite values.

    Raises:
        FileRefused (``refusal``): naming ``path`` and the first check that failed.
    """
    with open_regular(path, what, refusal=refusal) as (handle, size):
        read_header(path, handle, size, refusal=refusal)
        handle.seek(0)
        data = handle.read(size)
    weights = parse_weights(path, data, refusal=refusal)
    check_finite(path, weights, refusal=refusal)
    return weights


def weights_sha256(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of ``weights`` in a canonical form, independent of the file layout.

    Hashed in order: the number of tensors, then for each name in sorted order its UTF-8
    name, its dtype (``"float32"``), its number of dimensions and each dimension, and its
    data as raw bytes in C order as torch holds them in memory: little-endian, as in
    safetensors, on the little-endian machines siteflow runs on (x86-64, ARM64). Strings and
    data are preceded by their length in bytes; every number is an unsigned 64-bit
    little-endian integer.
    """
    digest = hashlib.sha256(struct.pack("<Q", len(weights)))
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        _update_sized(digest, name.encode("utf-8"))
        _update_sized(digest, str(tensor.dtype).removeprefix("torch.").encode("ascii"))
        digest.update(struct.pack(f"<Q{tensor.dim()}Q", tensor.dim(), *tensor.shape))
        _update_sized(digest, tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _update_sized(digest: Any, data: Any) -> None:
    """Feed ``data`` (bytes-like) to ``digest``, preceded by its length in bytes."""
    digest.update(struct.pack("<Q", memoryview(data).nbytes))
    digest.update(data)
