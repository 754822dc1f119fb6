"""Client sampling: which sites train in a round, the same on every driver and after a resume."""

from __future__ import annotations

import math
import random
from typing import Sequence


def sample_size(num_sites: int, fraction: float, min_sites: int | None) -> int:
    """How many of ``num_sites`` sites train in a round: ``ceil(fraction * num_sites)``, at
    least ``min_sites`` (and 1), at most all of them."""
    wanted = math.ceil(round(fraction * num_sites, 9))  # 0.3 * 10 is 3.0000000000000004: 3 sites
    return min(num_sites, max(wanted, min_sites or 1))


def draw_sites(sites: Sequence[str], *, fraction: float, min_sites: int | None, seed: int, round_number: int) -> list[str]:
    """The sites that train in round ``round_number``: :func:`sample_size` of ``sites``,
    drawn without replacement by a generator seeded with the study's ``seed`` and the round
    (the same draw in a simulation, on Flower and after a resume), in ``sites``' order."""
    count = sample_size(len(sites), fraction, min_sites)
    if count == len(sites):
        return list(sites)
    chosen = set(random.Random(f"siteflow-sampling/{seed}/{round_number}").sample(range(len(sites)), count))
    return [site for index, site in enumerate(sites) if index in chosen]
