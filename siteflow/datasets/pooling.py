"""Datasets and dataloaders of the sites of an experiment, and the preflight of their data."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from siteflow.config import SiteConfig
from siteflow.core.registry import DATASETS
from siteflow.datasets.errors import DataError, combined

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def build_dataset(site: SiteConfig, split: Split) -> Dataset:
    """The ``split`` of ``site``'s dataset, built from its merged config entry."""
    return DATASETS.get(site.dataset.name)(split, **site.dataset.kwargs)


def check_sites(sites: Sequence[SiteConfig], splits: Sequence[Split] = SPLITS) -> None:
    """Preflight of the data of ``sites`` before any training: every split in ``splits`` of
    every site whose data is here (``available``) is built (which lists its files) and
    checked (:meth:`~siteflow.datasets.base.SiteDataset.check`).

    Raises one DataError over every bad site and split, each with the files it names (all of
    them in ``paths``); any other error (e.g. an option no dataset accepts) propagates.
    """
    problems = []
    for site in sites:
        if not site.available:
            continue
        for split in splits:
            try:
                build_dataset(site, split).check()
            except DataError as problem:
                problems.append(DataError(f"site {site.task_name!r}, {split} split: {problem}", paths=problem.paths))
    if problems:
        raise combined(f"the data of {len(problems)} site split(s) is not usable", problems)


def pooled_dataset(
    sites: Sequence[SiteConfig], split: Split, wrap: Callable[[Dataset], Dataset] | None = None
) -> Dataset:
    """One site's split, or the concatenation of several sites' splits (joint training);
    ``wrap`` adapts each site's dataset first (e.g. places its labels in a label space)."""
    parts = [build_dataset(site, split) for site in sites]
    if wrap is not None:
        parts = [wrap(part) for part in parts]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def loader(dataset: Dataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader over ``dataset``; shuffling is seeded so that runs repeat.

    A shuffled (training) loader drops an incomplete last batch when there is more than one
    batch: a batch of one sample breaks batch normalisation and adds a noisy step."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=generator,
        drop_last=shuffle and len(dataset) > batch_size,
    )
