"""The consortium key: loading it from a key file or the environment, and making a fresh one.

The key is text: the bytes of a key file (``--key-file``), or else of the environment
variable ``SITEFLOW_HANDOVER_KEY``, with surrounding whitespace removed, so the same text in
either place is the same key; it is used as it is, not hex-decoded. A key file given
explicitly wins over the environment variable; it must be a regular file of at most
:data:`MAX_KEY_FILE_BYTES` (4 KiB; a key from ``keygen`` is 64 bytes), so a device or a pipe
given by mistake is refused instead of read for ever. ``python -m siteflow.handover
keygen`` prints a fresh key (:func:`generate_key`).
"""

from __future__ import annotations

import os
import secrets

from siteflow.core.io import open_regular
from siteflow.handover.errors import HandoverError

__all__ = ["KEY_ENV", "MAX_KEY_FILE_BYTES", "MIN_KEY_BYTES", "generate_key", "load_key"]

KEY_ENV = "SITEFLOW_HANDOVER_KEY"
MIN_KEY_BYTES = 16
MAX_KEY_FILE_BYTES = 4096


def load_key(key_file: str | os.PathLike | None = None) -> bytes | None:
    """The consortium key: from ``key_file`` if given, else ``$SITEFLOW_HANDOVER_KEY``, else None.

    The key is the text of the file or variable, surrounding whitespace removed, as bytes.
    A key shorter than 16 bytes is refused (a variable that is set but empty too), and a key
    file that is not a regular file or is larger than :data:`MAX_KEY_FILE_BYTES`.
    """
    if key_file is not None:
        source = str(key_file)
        with open_regular(key_file, "key file", refusal=HandoverError) as (handle, size):
            if size > MAX_KEY_FILE_BYTES:
                reason = f"the key file is {size:,} bytes long, a key file holds at most {MAX_KEY_FILE_BYTES:,}"
                raise HandoverError(source, reason)
            key = handle.read(size).strip()
    elif KEY_ENV in os.environ:
        source, key = f"${KEY_ENV}", os.fsencode(os.environ[KEY_ENV]).strip()
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise HandoverError(
            source,
            f"the key is {len(key)} bytes long, at least {MIN_KEY_BYTES} are needed "
            "(`python -m siteflow.handover keygen` prints a fresh one)",
        )
    return key


def generate_key() -> str:
    """A fresh random consortium key: 64 hex digits (256 random bits)."""
    return secrets.token_hex(32)
