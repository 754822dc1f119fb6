"""Send messages to the sites and collect their replies, checking for them often.

Flower's ``Grid.send_and_receive`` looks for replies every 3 s: a reply waits 1.5 s on
average before the server sees it, once per exchange. :func:`exchange` does the same with
``Grid``'s own ``push_messages`` and ``pull_messages`` every :data:`POLL_INTERVAL` seconds
(a pull is one small request to the SuperLink).
"""

from __future__ import annotations

import time
from typing import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_INTERVAL = 0.2
"""Seconds between two pulls of the replies."""


def exchange(grid: Grid, messages: Iterable[Message], *, timeout: float, poll_interval: float = POLL_INTERVAL) -> list[Message]:
    """Push ``messages`` and return the replies that arrive within ``timeout`` seconds (all
    of them, as soon as the last one is in); a message without a reply has none in the list."""
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        pulled = list(grid.pull_messages(waiting))
        replies.extend(pulled)
        waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(poll_interval)
    return replies
