"""The consortium key: loading it from a key file or the environment, and making a fresh one.

The key is text: the bytes of a key file (``--key-file``), or else of the environment
variable ``SITEFLOW_HANDOVER_KEY``, with surrounding whitespace removed, so the same text in
either place is the same key; it is used as it is, not hex-decoded. A key file given
explicitly wins over the environment variable. ``python -m siteflow.handover keygen`` prints
a fresh key (:func:`generate_key`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from siteflow.handover.errors import HandoverError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "generate_key", "load_key"]

KEY_ENV = "SITEFLOW_HANDOVER_KEY"
MIN_KEY_BYTES = 16


def load_key(key_file: str | os.PathLike | None = None) -> bytes | None:
    """The consortium key: from ``key_file`` if given, else ``$SITEFLOW_HANDOVER_KEY``, else None.

    The key is the text of the file or variable, surrounding whitespace removed, as bytes.
    A key shorter than 16 bytes is refused (a variable that is set but empty too).
    """
    if key_file is not None:
        source = str(key_file)
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise HandoverError(source, f"cannot read the key file: {error.strerror}") from None
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
