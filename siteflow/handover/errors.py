"""The refusals of the hand-over package: the error that refuses a file or key, and the warning.

Every refusal names the file (or the key's source) and the reason, so a site operator can
tell which file to send again and why.
"""

from __future__ import annotations

from typing import Callable

from siteflow.core.errors import FileRefused

__all__ = ["Fail", "HandoverError", "HandoverWarning"]


class HandoverError(FileRefused):
    """A hand-over file (or key) that is refused; the message names the file and the reason."""


class HandoverWarning(UserWarning):
    """A hand-over file accepted without checking its signature (the receiver has no key)."""


Fail = Callable[[str], HandoverError]
"""Makes the refusal of a malformed manifest from its reason (the file is already bound)."""
