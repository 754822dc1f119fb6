"""Deterministic train / val / test selection over a release's samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np

T = TypeVar("T")


def val_count(total: int, fraction: float) -> int:
    """Samples that go to val: ``fraction`` of ``total`` rounded half up, at least one and at
    most ``total - 1`` when ``fraction > 0`` and there are two samples or more."""
    if fraction <= 0 or total < 2:
        return 0
    return min(max(math.floor(fraction * total + 0.5), 1), total - 1)


def carve_val(
    items: Sequence[T], part: Literal["train", "val"], fraction: float, seed: int
) -> list[T]:
    """The ``part`` of ``items`` (a release's training samples in a stable order): the first
    ``val_count`` positions of a permutation seeded by ``seed`` are val, the rest train.
    Both parts keep the input order; together they are ``items``, without overlap."""
    permutation = np.random.default_rng(seed).permutation(len(items))
    in_val = np.zeros(len(items), dtype=bool)
    in_val[permutation[: val_count(len(items), fraction)]] = True
    return [item for item, is_val in zip(items, in_val) if is_val == (part == "val")]


def fixed_test_split(
    ids: Sequence[str],
    part: Literal["train", "test"],
    test_ids: Sequence[str] | None,
    num_test: int,
    where: str,
) -> list[str]:
    """The ``part`` of ``ids`` (sorted) for a release without an official split.

    The test part is ``test_ids`` when given, else the last ``num_test`` ids; the train part
    is the rest. ``where`` names the release in error messages.
    """
    if test_ids is None:
        if not 0 < num_test < len(ids):
            raise ValueError(
                f"num_test={num_test} must be between 1 and {len(ids) - 1} for the "
                f"{len(ids)} samples of {where}"
            )
        test = set(ids[len(ids) - num_test :])
    else:
        unknown = sorted(set(test_ids) - set(ids))
        if unknown:
            raise ValueError(f"test_ids {unknown} are not samples of {where}")
        test = set(test_ids)
    return [i for i in ids if (i in test) == (part == "test")]
