"""The chain of sites a model has passed through: its records and the rules it must follow.

Each site that trains the model adds a :class:`~siteflow.core.types.SiteRecord`. Rules of a well-formed chain
(part of a well-formed manifest): each record's ``num_samples`` is an integer from 1 to
:data:`MAX_SAMPLES` (:func:`check_sample_count`); the finishing times are ISO-8601 UTC
times that never decrease (:func:`check_finishing_times`). Rules the receiver applies: no
finishing time is more than :data:`CLOCK_SKEW` ahead of its own clock
(:func:`check_not_ahead`), and the chain follows the consortium's planned relay order
(:func:`check_relay_order`).

Clock skew: every time in the chain is read from the clock of the site that wrote it, and
hospitals' clocks differ. A receiver accepts times up to :data:`CLOCK_SKEW` (1 day) ahead
of its clock and refuses later ones on reading, before it trains. A writer never refuses
its hand-over because a received time is ahead of its clock: a record behind its
predecessor by clock skew is written with its predecessor's time (max(own time, last
received time), :func:`settle_clock_skew`).

The relay order is the planned sequence of task ids with every cycle listed
(``[1, 2, 3] * cycles``, so a cyclic relay wraps around only as often as planned); the
file's chain must be the start of that sequence and the receiver its next entry.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from siteflow.core.types import SiteRecord
from siteflow.handover.errors import Fail, HandoverError

__all__ = [
    "CLOCK_SKEW",
    "MAX_SAMPLES",
    "check_finishing_times",
    "check_not_ahead",
    "check_relay_order",
    "check_sample_count",
    "settle_clock_skew",
]

MAX_SAMPLES = 10**9
"""The most training samples one site may record: far more than any imaging site holds."""
CLOCK_SKEW = timedelta(days=1)
"""How far ahead of the receiver's clock a finishing time may be (see the module documentation)."""


def check_sample_count(value: Any, field: str, site: str, fail: Fail) -> int:
    """``value`` as a site's number of training samples: an integer from 1 to :data:`MAX_SAMPLES`.

    ``field`` (``"sites[0].num_samples"``) and ``site`` (``"task 1 ('site1')"``) name it in
    the refusal.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        reason = "not an integer"
    elif value < 1:
        reason = "a site trains on at least 1 sample"
    elif value > MAX_SAMPLES:
        reason = f"more than {MAX_SAMPLES:,} samples at one site is not plausible"
    else:
        return value
    raise fail(f"{field} is {value!r} for {site}: {reason}")


def check_finishing_times(sites: Sequence[SiteRecord], fail: Fail) -> None:
    """Refuse finishing times that are not ISO-8601 UTC, or that go backwards along the chain."""
    previous = None
    for index, site in enumerate(sites):
        time = _utc_time(site.finished_at)
        if time is None:
            raise fail(f"sites[{index}].finished_at {site.finished_at!r} is not an ISO-8601 UTC time")
        if previous is not None and time < previous:
            raise fail(f"sites out of order: sites[{index}] (task {site.task_id}) finished before sites[{index - 1}]")
        previous = time


def check_not_ahead(path: str | os.PathLike, sites: Sequence[SiteRecord], now: datetime) -> None:
    """Refuse a chain (of well-formed times) with a time more than :data:`CLOCK_SKEW` ahead of ``now``."""
    for index, site in enumerate(sites):
        if _utc_time(site.finished_at) > now + CLOCK_SKEW:
            clock = now.isoformat(timespec="seconds")
            raise HandoverError(
                path,
                f"sites[{index}] (task {site.task_id}, {site.task_name!r}) finished at {site.finished_at}, more than "
                f"{CLOCK_SKEW.total_seconds() / 3600:g} hours ahead of this site's clock ({clock}): "
                "the sites' clocks differ too much (set them right and write the file again)",
            )


def settle_clock_skew(sites: Sequence[SiteRecord], now: datetime) -> list[SiteRecord]:
    """``sites`` with each record that is behind its predecessor by clock skew given its predecessor's time.

    A record is behind by clock skew, not out of order, when its predecessor's time is ahead
    of ``now`` (this site's clock), or at most :data:`CLOCK_SKEW` ahead of the record's.
    Records further behind, and times that are not ISO-8601 UTC, are left as they are, for
    :func:`check_finishing_times` to refuse.
    """
    settled: list[SiteRecord] = []
    for site in sites:
        if settled:
            previous, time = _utc_time(settled[-1].finished_at), _utc_time(site.finished_at)
            if previous is not None and time is not None and time < previous and (
                previous > now or previous - time <= CLOCK_SKEW
            ):
                site = dataclasses.replace(site, finished_at=settled[-1].finished_at)
        settled.append(site)
    return settled


def check_chain_sites(path: str | os.PathLike, sites: Sequence[SiteRecord], names: Mapping[int, str]) -> None:
    """Refuse a chain with a site that is not one of ``names`` (task id -> site name, the
    receiver's config), by id or by name."""
    for index, site in enumerate(sites):
        expected = names.get(site.task_id)
        if expected is None:
            raise HandoverError(path, f"site {index + 1} of the chain is task {site.task_id} ({site.task_name}), which the config does not list")
        if site.task_name != expected:
            raise HandoverError(
                path, f"site {index + 1} of the chain is task {site.task_id} named {site.task_name!r}; the config names it {expected!r}"
            )


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


def _utc_time(text: Any) -> datetime | None:
    """The time ``text`` names, if it is an ISO-8601 string with a zero UTC offset; else None."""
    if not isinstance(text, str):
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        return None
    return time if time.utcoffset() == timedelta(0) else None

