"""The container: a safetensors file whose header metadata holds the manifest, and nothing else.

A safetensors file starts with the length of its JSON header (8 bytes, little-endian), then
the header; the tensors follow. A hand-over file's header metadata has exactly one entry,
``"siteflow.handover"``, the manifest as canonical JSON text. Safetensors holds tensors
only, so the file cannot run code; a file that is something else (a pickle, a ``torch.save``
zip) is refused by what its first bytes show, without ever being unpickled.
"""

from __future__ import annotations

import os
import struct

from siteflow.handover.errors import HandoverError
from siteflow.handover.jsontext import strict_json
from siteflow.handover.manifest import Manifest, parse_manifest

__all__ = ["MAX_HEADER_BYTES", "METADATA_KEY", "header_length", "manifest_from_header"]

METADATA_KEY = "siteflow.handover"
MAX_HEADER_BYTES = 100_000_000  # the safetensors limit


def header_length(path: str | os.PathLike, start: bytes, size: int) -> int:
    """The header length that the first 8 bytes of a safetensors file of ``size`` bytes give.

    Raises:
        HandoverError: naming ``path`` and what the file seems to be instead.
    """
    if len(start) == 8:
        length = struct.unpack("<Q", start)[0]
        if 2 <= length <= min(size - 8, MAX_HEADER_BYTES):
            return length
    raise HandoverError(path, f"not a safetensors hand-over file: {_what_else(start)}")


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


def _what_else(start: bytes) -> str:
    """What a file that starts with ``start`` and is not safetensors seems to be."""
    if start.startswith(b"PK\x03\x04"):
        return "it is a zip archive, as torch.save writes (siteflow never unpickles files)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (siteflow never unpickles files)"
    return "its header is cut short or absent"
