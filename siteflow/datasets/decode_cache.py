"""The decode cache: each sample's files are decoded (and resized) once per run, not once per
epoch.

A decoded sample is keyed by the SHA-256 of its files' content and of the preprocessing that
produced it (:func:`sample_key`): a changed file, or another ``img_size``, gives another key,
and the sample is decoded again. Kinds:

* ``memory``: a store shared by every dataset of the process. A training or validation loader
  with workers fills it in the main process first (the dataset's ``preload``, called by
  :func:`~siteflow.datasets.pooling.loader`), and the workers it forks share those arrays, so
  that an image is decoded once per run, however many stages, rounds and workers read it.
* ``disk``: arrays saved as ``.npy`` files (never pickles) under ``cache_dir``, written
  atomically (:func:`siteflow.core.atomic.atomic_path`: a reader never sees half a file; two
  workers or processes writing the same entry write the same bytes), kept across runs. For
  data sets larger than memory.
* ``none``: decoded at every read.

The files' digests are computed once per process and file, and computed again when the file's
device, inode, size or modification time changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from siteflow.core.atomic import atomic_path

CacheKind = Literal["memory", "disk", "none"]
CACHE_KINDS: tuple[str, ...] = ("memory", "disk", "none")
DEFAULT_CACHE_DIR = ".cache/decoded"
CACHE_VERSION = 1  # bump when what a key decodes to changes
CHUNK = 1 << 20


@dataclass(frozen=True)
class Decoded:
    """One decoded sample: ``image`` (H', W', C), uint8 or float32 in [0, 1], at the model's
    input resolution; ``label`` int64 (H, W) class ids (and ignore index) at the image's
    native resolution. Both read-only."""

    image: np.ndarray
    label: np.ndarray


def cache_folder(cache_dir: str, key: str = "cache_dir") -> Path:
    """The folder of a ``cache_dir`` option: a relative path, resolved from the working
    directory (as the synthetic datasets' ``root_path``), that stays inside it.

    Raises ValueError naming ``key`` for an empty or absolute path, or one that leaves the
    working directory (``..``): decoded patient images are written there.
    """
    if not cache_dir.strip():
        raise ValueError(f"{key} is empty; name a folder under the working directory")
    if os.path.isabs(cache_dir):
        raise ValueError(f"{key} {cache_dir!r} is an absolute path; name a folder under the working directory")
    normalised = os.path.normpath(cache_dir)
    if normalised == os.curdir or normalised.split(os.sep)[0] == os.pardir:
        raise ValueError(f"{key} {cache_dir!r} is not a folder under the working directory")
    return Path(normalised)


_DIGESTS: dict[tuple[int, int, int, int], str] = {}
_MEMORY: dict[str, Decoded] = {}


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of the content of the file at ``path``, read once per process while the
    file's device, inode, size and modification time stay the same."""
    status = path.stat()
    signature = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    digest = _DIGESTS.get(signature)
    if digest is None:
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                hasher.update(chunk)
        digest = _DIGESTS[signature] = hasher.hexdigest()
    return digest


def sample_key(files: Sequence[Path], preprocessing: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the digests of ``files`` (in order) and of ``preprocessing`` (a JSON-able
    mapping: the dataset's class, img_size, mask levels, ignore index, ...)."""
    content = {"version": CACHE_VERSION, "files": [file_digest(path) for path in files], **preprocessing}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class DecodeCache:
    """Decoded samples of one dataset, by kind (see the module).

    Args:
        kind: ``memory``, ``disk`` or ``none``.
        folder: where ``disk`` keeps its arrays (see :func:`cache_folder`).
    """

    def __init__(self, kind: str, folder: Path) -> None:
        if kind not in CACHE_KINDS:
            raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}, not {kind!r}")
        self.kind = kind
        self.folder = folder

    def get(self, files: Sequence[Path], preprocessing: Mapping[str, Any], decode: Callable[[], Decoded]) -> Decoded:
        """The decoded sample of ``files``: cached, or ``decode()``'s result (then cached)."""
        if self.kind == "none":
            return _read_only(decode())
        key = sample_key(files, preprocessing)
        if self.kind == "memory":
            found = _MEMORY.get(key)
            if found is None:
                found = _MEMORY[key] = _read_only(decode())
            return found
        return self._on_disk(key, decode)

    def _on_disk(self, key: str, decode: Callable[[], Decoded]) -> Decoded:
        image_path, label_path = self.paths(key)
        try:
            return _read_only(Decoded(np.load(image_path, allow_pickle=False), np.load(label_path, allow_pickle=False)))
        except (OSError, ValueError, EOFError):  # missing or unreadable: decode it again
            decoded = decode()
        for path, array in ((image_path, decoded.image), (label_path, decoded.label)):
            with atomic_path(path) as tmp:
                np.save(tmp, array, allow_pickle=False)
        return _read_only(decoded)

    def paths(self, key: str) -> tuple[Path, Path]:
        """The image and label ``.npy`` files of ``key`` in a ``disk`` cache."""
        folder = self.folder / key[:2]
        return folder / f"{key}.image.npy", folder / f"{key}.label.npy"


def _read_only(decoded: Decoded) -> Decoded:
    """``decoded`` with both arrays marked read-only: a consumer that writes into a cached
    array fails instead of changing the cache."""
    decoded.image.flags.writeable = False
    decoded.label.flags.writeable = False
    return decoded
