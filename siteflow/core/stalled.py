"""A site that does not learn while the others do, seen in the first rounds.

The rule (:func:`stalled_sites`), over the rows of the site matrix that test one model
trained on all sites (a federated round's test: rows without a trained site): from the
:data:`MIN_TESTS`-th such row on, a site is *stalled* when the other sites' metric rose on
average by at least :data:`OTHERS_RISE` since the first such row while its own rose by less
than :data:`SHARE` of their rise (or fell). FedBN's failure of issue 30 (one site's Dice at
0.12, 0.02, 0.11 while the others climbed from 0.3 to 0.6) is stalled at the third round.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from siteflow.core.site_matrix import StageResult, site_matrix

MIN_TESTS = 3
"""Tests of the whole federation needed before a site can be called stalled."""
OTHERS_RISE = 0.1
"""The other sites' mean rise since the first test that shows that training works."""
SHARE = 1 / 3
"""A stalled site rose by less than this share of the others' mean rise."""


def stalled_sites(rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> dict[str, tuple[float, float]]:
    """The stalled sites (see the module's rule) after ``rows``, each with its own rise of
    ``metric`` since the first test and the other sites' mean rise; empty before
    :data:`MIN_TESTS` tests or with fewer than two sites tested in both."""
    tests = [row for row in rows if row.trained_site is None]
    if len(tests) < MIN_TESTS:
        return {}
    matrix = site_matrix([tests[0], tests[-1]], site_names, metric)
    rises = {site: float(matrix[1, j] - matrix[0, j]) for j, site in enumerate(site_names) if np.isfinite(matrix[:, j]).all()}
    stalled = {}
    for site, rise in rises.items():
        others = [value for name, value in rises.items() if name != site]
        if not others:
            continue
        others_rise = float(np.mean(others))
        if others_rise >= OTHERS_RISE and rise < SHARE * others_rise:
            stalled[site] = (rise, others_rise)
    return stalled
