"""Sites cut from one data set, as federated papers cut them: by a metadata column, IID, by a
Dirichlet draw over the labels (concentration ``alpha``), or by quantity skew.

The cut is a pure function of the data set's labels (or column values), the options and the
seed: every process that reads the same files with the same options gets the same parts, so
a deployed site computes its own part and reads only its images. One draw serves both parts
of a release: the sites' shares (of each class, for ``dirichlet``; of the samples, for
``quantity``) are drawn once and applied to the train part and to the test part, so that a
site's test images follow its own label mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Scheme = Literal["iid", "dirichlet", "quantity", "column"]
SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "quantity", "column")
REDRAWS = 100
"""Dirichlet and quantity draws that leave a site without ``min_samples`` training samples are
redrawn (from the same seeded stream) at most this many times."""


class PartitionError(ValueError):
    """A partition the data cannot satisfy; the message names the option to change."""


@dataclass(frozen=True)
class Partition:
    """How one data set is cut into sites (the dataset option ``partition``).

    Attributes:
        scheme: ``iid`` (each class spread evenly over the sites at random), ``dirichlet``
            (site ``k`` receives a share ``q[c, k]`` of class ``c``, ``q[c] ~ Dir(alpha)``:
            small ``alpha`` gives sites dominated by few classes, large ``alpha`` the IID
            mix), ``quantity`` (site sizes in shares ``~ Dir(alpha)``, labels IID) or
            ``column`` (one site per value of a metadata ``column``).
        num_sites: the number of sites (not for ``column``: its values are the sites).
        alpha: the Dirichlet concentration, positive.
        seed: the draw's seed (independent of the run's seed: one cut for every run).
        column: the metadata column of ``column``.
        min_samples: a site must get at least this many training samples (Dirichlet and
            quantity draws are redrawn until every site has them, see :data:`REDRAWS`).
    """

    scheme: Scheme = "iid"
    num_sites: int = 2
    alpha: float = 0.5
    seed: int = 0
    column: str | None = None
    min_samples: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise PartitionError(f"scheme must be one of {list(SCHEMES)}, not {self.scheme!r}")
        if self.scheme == "column":
            if not self.column:
                raise PartitionError("scheme 'column' needs the metadata column to cut by: set column")
        elif self.num_sites < 1:
            raise PartitionError(f"num_sites must be at least 1, not {self.num_sites}")
        if self.alpha <= 0:
            raise PartitionError(f"alpha must be positive, not {self.alpha}")
        if self.min_samples < 0:
            raise PartitionError(f"min_samples must be non-negative, not {self.min_samples}")

    def describe(self) -> dict:
        """The options as JSON-able values (``partition.json``)."""
        keys = {"iid": ("num_sites",), "dirichlet": ("num_sites", "alpha"), "quantity": ("num_sites", "alpha"), "column": ("column",)}
        return {"scheme": self.scheme, **{key: getattr(self, key) for key in keys[self.scheme]}, "seed": self.seed,
                "min_samples": self.min_samples}


def assign(partition: Partition, parts: dict[str, np.ndarray], num_classes: int) -> dict[str, np.ndarray]:
    """The site of every sample of each release part.

    Args:
        partition: the cut (not ``column``: see :func:`assign_by_column`).
        parts: ``{"train": labels int (N_train,), "test": labels int (N_test,)}`` (either may
            be absent), class ids in ``0 ... num_classes - 1``.
        num_classes: K.

    Returns:
        ``{part: site int64 (N_part,)}`` in ``0 ... num_sites - 1``.

    Raises:
        PartitionError: more sites than training samples, or no draw of :data:`REDRAWS`
            giving every site ``min_samples`` training samples.
    """
    sites = partition.num_sites
    train = parts.get("train", np.zeros(0, dtype=np.int64))
    if sites > len(train):
        raise PartitionError(f"num_sites={sites} is more than the {len(train)} training samples of the data set: lower num_sites")
    rng = np.random.default_rng([partition.seed, 32])
    for _ in range(REDRAWS):
        shares = _shares(partition, num_classes, rng)  # (K, sites): each class's split over the sites
        result = {name: _split(labels, shares, rng, rotate=partition.scheme == "iid") for name, labels in parts.items()}
        counts = np.bincount(result.get("train", np.zeros(0, dtype=np.int64)), minlength=sites)
        if counts.min() >= partition.min_samples:
            return result
    raise PartitionError(
        f"after {REDRAWS} draws of scheme {partition.scheme!r} (alpha={partition.alpha}, seed={partition.seed}), a site still "
        f"has fewer than min_samples={partition.min_samples} training samples: raise alpha, lower num_sites or min_samples"
    )


def assign_by_column(partition: Partition, values: dict[str, Sequence[str]]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The sites of a ``column`` cut: the column's distinct values (sorted; the sites, in
    order), and the site of every sample of each part, from ``values`` = ``{part: the column's
    value of each sample}``."""
    names = sorted({value for column in values.values() for value in column})
    index = {name: site for site, name in enumerate(names)}
    return names, {part: np.array([index[value] for value in column], dtype=np.int64) for part, column in values.items()}


def _shares(partition: Partition, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(K, sites) float64: the share of each class that each site receives (rows sum to 1)."""
    sites = partition.num_sites
    if partition.scheme == "iid":
        return np.full((num_classes, sites), 1.0 / sites)
    if partition.scheme == "dirichlet":
        return rng.dirichlet(np.full(sites, partition.alpha), size=num_classes)
    sizes = rng.dirichlet(np.full(sites, partition.alpha))  # quantity: one size share per site, every class alike
    return np.tile(sizes, (num_classes, 1))


def _split(labels: np.ndarray, shares: np.ndarray, rng: np.random.Generator, *, rotate: bool) -> np.ndarray:
    """The site of each of ``labels`` (N,): the samples of class ``c``, shuffled, cut at the
    rounded cumulative ``shares[c]``; with ``rotate`` (equal shares), the chunks go to the
    sites in a random rotation per class, so that no site always receives the remainders."""
    site = np.zeros(len(labels), dtype=np.int64)
    sites = shares.shape[1]
    for c in range(shares.shape[0]):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        cuts = np.round(np.cumsum(shares[c])[:-1] * len(members)).astype(int)
        offset = int(rng.integers(sites)) if rotate else 0
        for k, chunk in enumerate(np.split(members, cuts)):
            site[chunk] = (k + offset) % sites
    return site
