"""Opening a received file: a regular file only, never waiting on a pipe or reading a device.

A path given as a hand-over file or a key file may name anything: a FIFO (opening it waits
for a writer, reading it waits for data), a device (``/dev/zero`` never ends; opening some
devices does something), a directory. :func:`open_regular` refuses anything but a regular
file, by its status before opening it and again once it is open (the path may have changed
in between; the open itself does not wait: ``O_NONBLOCK``, which has no effect on a regular
file). Its callers read only as many bytes as the file's size allows, never "to the end".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from siteflow.handover.errors import HandoverError

__all__ = ["open_regular"]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@contextmanager
def open_regular(path: str | os.PathLike, what: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``path`` for reading if it is a regular file; yield the open file and its size.

    ``what`` names the file in the refusal of a file that cannot be read (``"file"``, ``"key
    file"``); an :class:`OSError` while the file is open is refused in the same words.

    Raises:
        HandoverError: naming ``path``: it cannot be read, or it is not a regular file.
    """
    try:
        _check_regular(path, os.stat(path).st_mode)
        descriptor = os.open(path, _FLAGS)
    except OSError as error:
        raise HandoverError(path, f"cannot read the {what}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        try:
            status = os.fstat(descriptor)
            _check_regular(path, status.st_mode)
            yield handle, status.st_size
        except OSError as error:
            raise HandoverError(path, f"cannot read the {what}: {error.strerror}") from None


def _check_regular(path: str | os.PathLike, mode: int) -> None:
    """Refuse ``path`` unless ``mode`` (its ``st_mode``) is a regular file's, naming what it is."""
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise HandoverError(path, f"not a regular file but {kind}: only a regular file is read")
