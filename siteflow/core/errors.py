"""The refusals every layer raises: a component's option, and a file that is not read.

A component's constructor refuses one of its own options with :class:`OptionError`; the
config's validation reports it at that option's key path. A file that came from elsewhere
(another site's weights, a pre-trained encoder, a key) and cannot be read safely is refused
with :class:`FileRefused`, naming the file and the reason. :func:`nearest` suggests the name
a misspelt one was probably meant to be.
"""

from __future__ import annotations

import difflib
import os
from typing import Iterable

__all__ = ["FileRefused", "OptionError", "nearest"]


class OptionError(ValueError):
    """A constructor's refusal of one of its own options, by name: ``OptionError("personal_layers",
    "['hed'] name no module of UNet")``. The config's validation reports it at that option's
    key path (``common.strategy.kwargs.personal_layers: ...``), where a plain ``ValueError``
    is reported at the component's ``kwargs``."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.problem = message
        super().__init__(f"{option}: {message}")


class FileRefused(ValueError):
    """A file that is refused (it cannot be read, or is not what it must be); the message
    is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def nearest(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` hint for ``name``, or an empty string."""
    by_lower = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[match[0]]!r}?" if match else ""
