"""Datasets and dataloaders of the sites of an experiment."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from siteflow.config import SiteConfig
from siteflow.core.registry import DATASETS

Split = Literal["train", "val", "test"]


def build_dataset(site: SiteConfig, split: Split) -> Dataset:
    """The ``split`` of ``site``'s dataset, built from its merged config entry."""
    return DATASETS.get(site.dataset.name)(split, **site.dataset.kwargs)


def pooled_dataset(sites: Sequence[SiteConfig], split: Split, label_space: Sequence[str] | None = None) -> Dataset:
    """One site's split, or the concatenation of several sites' splits (joint training).

    Args:
        label_space: for multi-label sites, the union of all sites' labels: each site's
            labels are placed in it (see :class:`siteflow.tasks.multilabel.UnionLabels`).

    Raises:
        ValueError: segmentation sites disagree on classes or input channels, so they cannot
            be pooled.
    """
    parts = [build_dataset(site, split) for site in sites]
    if label_space is not None:
        from siteflow.tasks.multilabel import UnionLabels

        parts = [UnionLabels(part, label_space) for part in parts]
    else:
        first = parts[0]
        for site, part in zip(sites[1:], parts[1:]):
            if (part.class_names, part.in_channels) != (first.class_names, first.in_channels):
                raise ValueError(
                    f"site {site.task_name!r} has classes {part.class_names} and {part.in_channels} input "
                    f"channels, site {sites[0].task_name!r} has {first.class_names} and {first.in_channels}: "
                    "they cannot be pooled"
                )
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
