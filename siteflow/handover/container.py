"""The container: a safetensors file whose header metadata holds the manifest, and nothing else.

A safetensors file starts with the length of its JSON header (8 bytes, little-endian), then
the header; the tensors follow. A hand-over file's header metadata has exactly one entry,
``"siteflow.handover"``, the manifest as canonical JSON text. Safetensors holds tensors
only, so the file cannot run code; a file that is something else (a pickle, a ``torch.save``
zip) is refused by what its first bytes show, without ever being unpickled.

The header is read only once its length is known to fit the file and to be at most
:data:`MAX_HEADER_BYTES` (16 MiB). A hand-over header holds about 100 bytes per tensor (a
UNet of depth 4: 114 tensors, 10.6 kB) and a manifest of a few kB, so the limit leaves room
for 100,000 tensors while bounding what an absurd length can cost: memory, and the time to
parse it (the safetensors format itself allows 100 MB, which takes tens of seconds to parse).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from siteflow.handover.errors import HandoverError
from siteflow.handover.jsontext import strict_json
from siteflow.handover.manifest import Manifest, parse_manifest

__all__ = ["MAX_HEADER_BYTES", "METADATA_KEY", "manifest_from_header", "read_header"]

METADATA_KEY = "siteflow.handover"
MAX_HEADER_BYTES = 16 * 2**20


def read_header(path: str | os.PathLike, handle: BinaryIO, size: int) -> bytes:
    """The header of the safetensors file ``path``, open as ``handle`` at its start, ``size`` bytes long.

    Its length (the first 8 bytes) is checked before anything more is read.

    Raises:
        HandoverError: naming ``path`` and what the file seems to be instead, or the length
            over :data:`MAX_HEADER_BYTES`.
    """
    start = handle.read(8)
    other = _other_format(start)
    if other is not None:
        raise HandoverError(path, f"not a safetensors hand-over file: {other}")
    length = struct.unpack("<Q", start)[0] if len(start) == 8 else 0
    if length > MAX_HEADER_BYTES:
        raise HandoverError(
            path,
            f"not a safetensors hand-over file: its header length is {length:,} bytes, "
            f"over the limit of {MAX_HEADER_BYTES:,}",
        )
    if not 2 <= length <= size - 8:
        raise HandoverError(path, "not a safetensors hand-over file: its header is cut short or absent")
    return handle.read(length)


def manifest_from_header(path: str | os.PathLike, header: bytes) -> Manifest:
    """Parse the safetensors header bytes of ``path`` down to its validated manifest."""
    try:
        parsed = strict_json(header.decode("utf-8"))
    except ValueError as error:
        raise HandoverError(path, f"not a safetensors hand-over file: malformed header ({error})") from None
    metadata = parsed.get("__metadata__") if isinstance(parsed, dict) else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise HandoverError(path, f"a safetensors file without a hand-over manifest (no {METADATA_KEY!r} entry)")
    if metadata.keys() != {METADATA_KEY}:
        unexpected = sorted(metadata.keys() - {METADATA_KEY})
        raise HandoverError(path, f"unexpected metadata entries besides {METADATA_KEY!r}: {unexpected}")
    if not isinstance(metadata[METADATA_KEY], str):
        raise HandoverError(path, "malformed manifest: not a string")
    try:
        manifest = strict_json(metadata[METADATA_KEY])
    except ValueError as error:
        raise HandoverError(path, f"malformed manifest JSON ({error})") from None
    return parse_manifest(path, manifest)


def _other_format(start: bytes) -> str | None:
    """What a file that starts with ``start`` is, if its first bytes show another format."""
    if start.startswith(b"PK\x03\x04"):
        return "it is a zip archive, as torch.save writes (siteflow never unpickles files)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (siteflow never unpickles files)"
    return None
