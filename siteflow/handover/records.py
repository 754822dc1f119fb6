"""The chain of sites a model has passed through: its records and the rules it must follow.

Each site that trains the model adds a :class:`SiteRecord`. Two rules apply to the chain:
its finishing times are ISO-8601 UTC times that never decrease (part of a well-formed
manifest, :func:`check_finishing_times`), and it follows the consortium's planned relay
order (checked by the receiver, :func:`check_relay_order`).

The relay order is the planned sequence of task ids with every cycle listed
(``[1, 2, 3] * cycles``, so a cyclic relay wraps around only as often as planned); the
file's chain must be the start of that sequence and the receiver its next entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from siteflow.handover.errors import Fail, HandoverError

__all__ = ["SiteRecord", "check_finishing_times", "check_relay_order"]


@dataclass(frozen=True)
class SiteRecord:
    """One site of the chain: which site trained, on how many samples, finished when (UTC)."""

    task_id: int
    task_name: str
    num_samples: int
    finished_at: str

    @classmethod
    def finished_now(cls, task_id: int, task_name: str, num_samples: int) -> SiteRecord:
        """The record of a site that finishes now."""
        return cls(task_id, task_name, num_samples, datetime.now(timezone.utc).isoformat(timespec="seconds"))


def check_finishing_times(sites: Sequence[SiteRecord], fail: Fail) -> None:
    """Refuse finishing times that are not ISO-8601 UTC, or that go backwards along the chain."""
    previous = None
    for index, site in enumerate(sites):
        try:
            time = datetime.fromisoformat(site.finished_at)
        except ValueError:
            time = None
        if time is None or time.utcoffset() != timedelta(0):
            raise fail(f"sites[{index}].finished_at {site.finished_at!r} is not an ISO-8601 UTC time")
        if previous is not None and time < previous:
            raise fail(f"sites out of order: sites[{index}] (task {site.task_id}) finished before sites[{index - 1}]")
        previous = time


def check_relay_order(
    path: str | os.PathLike, sites: Sequence[SiteRecord], order: list[int], receiving: int | None
) -> None:
    """Refuse a chain that is not the start of ``order``, or a ``receiving`` site that is not next."""
    for index, site in enumerate(sites):
        if index >= len(order):
            reason = f"the chain has {len(sites)} sites, the relay order {order} plans {len(order)}"
            raise HandoverError(path, f"site out of order: {reason}")
        if site.task_id != order[index]:
            raise HandoverError(
                path,
                f"site out of order: site {index + 1} of the chain is task {site.task_id} ({site.task_name}), "
                f"the relay order {order} has task {order[index]} there",
            )
    if receiving is not None and (len(sites) >= len(order) or order[len(sites)] != receiving):
        after = f"task {sites[-1].task_id} ({sites[-1].task_name})" if sites else "no site yet"
        expected = f"task {order[len(sites)]}" if len(sites) < len(order) else "no one (the relay is over)"
        raise HandoverError(
            path,
            f"site out of order: the chain ends with {after}, so by the relay order {order} "
            f"the next site is {expected}, not task {receiving}",
        )
