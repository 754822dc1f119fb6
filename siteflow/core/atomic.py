"""Atomic file output: a crash never leaves a half-written file behind.

Every writer goes through :func:`atomic_path`: the content is written to a temporary file in
the destination's folder, flushed to disk, and renamed over the destination (an atomic
operation on POSIX file systems), after which the folder entry is flushed too.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save

__all__ = ["OutputError", "safe_name", "atomic_path", "write_bytes", "write_text", "write_json", "save_weights", "load_weights"]


class OutputError(OSError):
    """An output file could not be written (full disk, read-only or foreign folder); names it."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the sentence naming the file, without "[Errno N]"


def _file_mode() -> int:
    """The permissions a new file gets from the user's umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def safe_name(name: str) -> str:
    """A file-name-safe version of a site, stage, model or image name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Example::

        with atomic_path("results/plot.png") as tmp:
            figure.savefig(tmp, format="png")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name ends like the destination (".nii.gz"), for writers that go by suffix.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix="".join(path.suffixes), dir=path.parent)
        os.fchmod(fd, FILE_MODE)  # mkstemp makes files only their owner may read
        os.close(fd)
    except OSError as error:
        raise OutputError(error.errno, f"cannot write {path}: {error.strerror}") from error
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(error.errno, f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save name-keyed tensors as safetensors, atomically (tensors are made contiguous).

    The file is serialised in memory and written by :func:`write_bytes`, so that a full disk
    raises :class:`OutputError` naming ``path`` (safetensors' own file writer raises an error
    that names no file).
    """
    tensors = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load name-keyed tensors from a safetensors file (never a pickle)."""
    return load_file(str(path))
