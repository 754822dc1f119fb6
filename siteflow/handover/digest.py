"""The canonical SHA-256 of the weights, which the manifest holds and the reader checks.

The digest is computed over the tensors themselves, not over the file's bytes, so it does
not depend on the order or layout in which safetensors stores them (see
:func:`weights_sha256`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["is_hex_digest", "weights_sha256"]


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


def is_hex_digest(text: str) -> bool:
    """Whether ``text`` is a SHA-256 digest as the manifest writes it: 64 lowercase hex digits."""
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)


def _update_sized(digest: Any, data: Any) -> None:
    """Feed ``data`` (bytes-like) to ``digest``, preceded by its length in bytes."""
    digest.update(struct.pack("<Q", memoryview(data).nbytes))
    digest.update(data)
