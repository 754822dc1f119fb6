"""The signature: HMAC-SHA256 of the manifest with the consortium key, and the policy on it.

The signature is the HMAC-SHA256 (hex) with the consortium's shared key (see
:mod:`siteflow.handover.keys`) over the canonical JSON of the manifest without its
``signature`` field (``json.dumps(..., sort_keys=True, separators=(",", ":"))``). Since the
manifest holds the weights' digest, the signature covers the weights too.

Policy: a receiver with a key refuses an unsigned file or a wrong signature. A receiver
without a key accepts a signed file with a :class:`~siteflow.handover.errors.HandoverWarning`
(its signature is not checked: the receiver chose not to check), and an unsigned one
silently; the digest still catches corruption of the weights, but not deliberate edits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings
from collections.abc import Mapping
from typing import Any

from siteflow.handover.errors import HandoverError, HandoverWarning
from siteflow.handover.jsontext import canonical_json
from siteflow.handover.manifest import Manifest

__all__ = ["check_signature", "signature"]


def signature(manifest: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of ``manifest`` without its signature."""
    unsigned = {name: value for name, value in manifest.items() if name != "signature"}
    return hmac.new(key, canonical_json(unsigned).encode("utf-8"), hashlib.sha256).hexdigest()


def check_signature(path: str | os.PathLike, manifest: Manifest, key: bytes | None) -> None:
    """Apply the signature policy (see the module documentation) to the manifest of ``path``.

    The warning is attributed to the caller of the public reading function that calls this.
    """
    if key is None:
        if manifest.signature is not None:
            message = f"{path}: signed, but no key was given: the signature is not checked"
            warnings.warn(message, HandoverWarning, stacklevel=3)
    elif manifest.signature is None:
        raise HandoverError(path, "the file is not signed, but a consortium key is set")
    elif not hmac.compare_digest(signature(manifest.to_dict(), key), manifest.signature):
        raise HandoverError(path, "wrong signature: signed with another key, or edited after signing")
