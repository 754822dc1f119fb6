"""Seeded item indices: the randomness of a training item (its patch, its augmentation) drawn
by the training loader's sampler, in the main process, from the loader's generator.

A dataset whose class sets ``takes_item_seeds = True`` accepts, besides an ``int`` index, an
``(index, item_seed)`` pair, and draws everything random about that item from ``item_seed``
alone. :class:`SeededSampler` yields such pairs: a fresh permutation and a fresh seed per item
every epoch, all drawn from one ``torch.Generator``. So the items are reproducible from the
run's seed, differ between epochs and between items, do not depend on ``num_workers`` (the
workers only read the seeds), and survive an exact resume (the generator's state is saved
with the checkpoints, see :mod:`siteflow.engine.random_state`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any, Union

import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

ItemIndex = Union[int, tuple[int, int]]
"""An item index: ``int`` (the deterministic item) or ``(index, item_seed)``."""

SEED_BOUND = 2**63 - 1
"""Item seeds are drawn uniformly from ``[0, SEED_BOUND)``."""


def split_index(index: ItemIndex) -> tuple[int, int | None]:
    """``(index, item_seed)`` of an item index; the seed is None for a plain ``int``."""
    if isinstance(index, (tuple, list)):
        position, seed = index
        return int(position), int(seed)
    return int(index), None


def takes_item_seeds(dataset: Dataset) -> bool:
    """Whether ``dataset`` accepts ``(index, item_seed)`` pairs (its ``takes_item_seeds``)."""
    return bool(getattr(dataset, "takes_item_seeds", False))


class SeededSampler(Sampler[tuple[int, int]]):
    """Every epoch, the indices ``0 .. size - 1`` in a random order, each with its own item
    seed: ``(index, item_seed)`` pairs, drawn from ``generator`` when iteration starts (the
    permutation first, then the ``size`` seeds, as int64 in ``[0, SEED_BOUND)``).

    Args:
        size: the dataset's length.
        generator: the training loader's generator (also ``DataLoader.generator``).
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        super().__init__()
        self.size = size
        self.generator = generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        seeds = torch.randint(0, SEED_BOUND, (self.size,), generator=self.generator, dtype=torch.int64).tolist()
        yield from zip(order, seeds)


class SeededConcatDataset(ConcatDataset):
    """The concatenation of several sites' splits (joint training) that passes item seeds on:
    item ``(i, seed)`` is item ``(j, seed)`` of the part that holds position ``i``. It takes
    item seeds when every part does; a plain ``int`` is passed on as an ``int``."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        super().__init__(datasets)
        self.takes_item_seeds = all(takes_item_seeds(part) for part in self.datasets)

    def __getitem__(self, index: ItemIndex) -> Any:
        position, seed = split_index(index)
        if position < 0:
            if -position > len(self):
                raise IndexError(f"index {position} out of range for {len(self)} items")
            position += len(self)
        part = bisect.bisect_right(self.cumulative_sizes, position)
        if part == len(self.datasets):
            raise IndexError(f"index {position} out of range for {len(self)} items")
        local = position - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][local if seed is None else (local, seed)]
