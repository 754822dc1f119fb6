"""The container: a safetensors file whose header metadata holds the manifest, and nothing else.

A hand-over file's safetensors header metadata has exactly one entry,
``"siteflow.handover"``, the manifest as canonical JSON text. Safetensors holds tensors
only, so the file cannot run code; the header itself is read safely, its length bounded, by
:func:`siteflow.core.io.read_header` (a file that is something else, a pickle or a
``torch.save`` zip, is refused by what its first bytes show, without ever being unpickled).
"""

from __future__ import annotations

import os

from siteflow.handover.errors import HandoverError
from siteflow.handover.jsontext import strict_json
from siteflow.handover.manifest import Manifest, parse_manifest

__all__ = ["KIND", "METADATA_KEY", "manifest_from_header"]

METADATA_KEY = "siteflow.handover"
KIND = "safetensors hand-over file"
"""What a hand-over file is, in the refusal of a file that is not one."""


def manifest_from_header(path: str | os.PathLike, header: bytes) -> Manifest:
    """Parse the safetensors header bytes of ``path`` down to its validated manifest."""
    try:
        parsed = strict_json(header.decode("utf-8"))
    except ValueError as error:
        raise HandoverError(path, f"not a {KIND}: malformed header ({error})") from None
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
