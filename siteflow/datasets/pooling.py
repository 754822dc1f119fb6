"""Datasets and dataloaders of the sites of an experiment, and the preflight of their data."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from siteflow.config import SiteConfig
from siteflow.core.registry import DATASETS
from siteflow.datasets.errors import DataError, combined
from siteflow.datasets.sampling import SeededConcatDataset, SeededSampler, takes_item_seeds

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
    """One site's split, or the concatenation of several sites' splits (joint training, a
    :class:`~siteflow.datasets.sampling.SeededConcatDataset`, which passes item seeds on);
    ``wrap`` adapts each site's dataset first (e.g. places its labels in a label space)."""
    parts = [build_dataset(site, split) for site in sites]
    if wrap is not None:
        parts = [wrap(part) for part in parts]
    return parts[0] if len(parts) == 1 else SeededConcatDataset(parts)


def loader(dataset: Dataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader over ``dataset``; shuffling is seeded so that runs repeat.

    A shuffled (training) loader draws from its ``generator`` (seeded by ``seed``) the order of
    every epoch and, for a dataset that takes item seeds (segmentation: patches and
    augmentation), one seed per item (:class:`~siteflow.datasets.sampling.SeededSampler`); it
    drops an incomplete last batch when there is more than one batch: a batch of one sample
    breaks batch normalisation and adds a noisy step; training items of several sizes (whole
    native images: no ``patch_size`` nor ``img_size``) cannot be batched, a DataError naming
    the sizes. An unshuffled (evaluation) loader whose items' labels differ in size
    (native-resolution labels of several sites, or of one site whose images differ) reads one
    item per batch.

    With workers, the dataset's decode cache is filled first, in this process (its
    ``preload``), so that the workers share the decoded arrays instead of each decoding them.
    A shuffled loader starts its workers anew every epoch: a DataLoader draws a base seed from
    its generator whenever an epoch starts its iterator, which persistent workers do once per
    run only, so they would make the batches depend on ``num_workers``.
    """
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if num_workers > 0:
        _preload(dataset)
    sizes = _label_sizes(dataset)
    if len(sizes) > 1 and shuffle and batch_size > 1:
        raise DataError(
            f"the training items differ in size ({', '.join(str(list(size)) for size in sorted(sizes))}) and cannot be "
            f"batched by {batch_size}: set the dataset's patch_size (or img_size, for 2D images)"
        )
    if len(sizes) > 1:
        batch_size = 1
    seeded = shuffle and takes_item_seeds(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and not seeded,
        sampler=SeededSampler(len(dataset), generator) if seeded else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0 and not shuffle,
        generator=generator,
        drop_last=shuffle and len(dataset) > batch_size,
    )


def _parts(dataset: Dataset) -> list[Dataset]:
    """The site datasets that ``dataset`` concatenates (itself when it is one)."""
    return list(dataset.datasets) if isinstance(dataset, SeededConcatDataset) else [dataset]


def _preload(dataset: Dataset) -> None:
    """Fills the decode cache of every part of ``dataset`` that has one."""
    for part in _parts(dataset):
        if hasattr(part, "preload"):
            part.preload()


def _label_sizes(dataset: Dataset) -> set[tuple[int, int]]:
    """The label sizes of ``dataset``'s items, as far as its parts tell them (empty when none
    does: their items share one size)."""
    return {size for part in _parts(dataset) if hasattr(part, "label_sizes") for size in part.label_sizes()}
