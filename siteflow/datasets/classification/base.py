"""The base of the multi-class (one class per image) site datasets: a release's samples with
their class ids, optionally cut into sites by a :class:`~siteflow.datasets.classification.partition.Partition`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from siteflow.core.errors import OptionError
from siteflow.datasets.base import SiteDataset, Split
from siteflow.datasets.classification.partition import Partition, PartitionError, assign, assign_by_column
from siteflow.datasets.errors import DataError
from siteflow.datasets.files import resize_bilinear
from siteflow.datasets.spec import DataSpec, image_size
from siteflow.datasets.splits import carve_val

Release = Literal["train", "test"]
PARTITION_FIELDS = tuple(field.name for field in dataclasses.fields(Partition))


@dataclass(frozen=True)
class Sample:
    """One image of a release: its id, class id, the file it is read from, its row in that
    file (array files such as MedMNIST's ``.npz``; -1 for one image per file), and its
    metadata values (for a partition by column)."""

    id: str
    label: int
    source: Path
    row: int = -1
    metadata: tuple[tuple[str, str], ...] = ()


def partition_of(options: dict[str, Any] | None) -> Partition | None:
    """The :class:`Partition` of the dataset option ``partition`` (None: none); OptionError
    at ``partition`` naming an unknown key or a bad value."""
    if options is None:
        return None
    unknown = sorted(set(options) - set(PARTITION_FIELDS))
    if unknown:
        raise OptionError("partition", f"unknown option(s) {unknown}; allowed: {list(PARTITION_FIELDS)}")
    try:
        return Partition(**options)
    except (PartitionError, TypeError) as error:
        raise OptionError("partition", str(error)) from None


def check_part(partition: Partition | None, part: int | str | None) -> None:
    """OptionError at ``part`` unless it names a part of ``partition`` (an index below
    ``num_sites``, or a column value), or is None without a partition."""
    if partition is None:
        if part is not None:
            raise OptionError("part", f"is {part!r}, but no partition is set: set partition, or leave part out")
        return
    if partition.scheme == "column":
        if not isinstance(part, str):
            raise OptionError("part", f"a partition by column {partition.column!r} needs the site's value of the column (a string), not {part!r}")
    elif not isinstance(part, int) or isinstance(part, bool) or not 0 <= part < partition.num_sites:
        raise OptionError("part", f"must be the site's index, 0 ... {partition.num_sites - 1}, not {part!r}")


class ClassificationDataset(SiteDataset):
    """One site's split of a release with one class per image.

    A subclass sets ``class_names`` (instance attribute, before calling this ``__init__``;
    :meth:`_classes` gives them from the options for :meth:`describe`), lists the release's
    samples with :meth:`_release_samples` and reads an image with :meth:`_pixels`.

    Splits: ``test`` is the release's test part, ``val`` is ``val_fraction`` of its training
    part (seeded by ``split_seed``, see :func:`~siteflow.datasets.splits.carve_val`), ``train``
    the rest. With ``partition``, both parts are first cut into sites and this dataset keeps
    the site ``part`` (see :mod:`~siteflow.datasets.classification.partition`): an index
    ``0 ... num_sites - 1``, or the site's value of the partition's column.

    Item: ``{"image": float32 (C, H, W) (volumes: (C, D, H, W)) in out_range, "label": int64
    () class id, "id": str}``; images are resized bilinearly to ``img_size`` (2D only).

    Bad data is a DataError naming the file: a class id outside the declared classes, a file
    that does not open; an empty split (a site that gets no sample) is one too.

    Args:
        channels: C of the images (1: grey, 3: RGB; files are converted).
        partition: the cut into sites, keys of :class:`~siteflow.datasets.classification.partition.Partition`
            (``scheme``, ``num_sites``, ``alpha``, ``seed``, ``column``, ``min_samples``); None: the
            release is one site.
        part: this site's part of ``partition``.
        **kwargs: the options of :class:`~siteflow.datasets.base.SiteDataset`.
    """

    task: ClassVar[str] = "classification"
    spatial_dims: ClassVar[int] = 2
    ignore_index: ClassVar[int | None] = None  # every image has its class
    class_names: tuple[str, ...]

    def __init__(
        self,
        split: Split,
        *,
        channels: Literal[1, 3] = 3,
        partition: dict[str, str | int | float] | None = None,
        part: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels!r}")
        super().__init__(split, **kwargs)
        self.in_channels = channels
        self.partition = partition_of(partition)
        check_part(self.partition, part)
        self.part = part
        where = f"{type(self).__name__} at {self.root_path}" + ("" if part is None else f", part {part!r} of the partition")
        if split == "test" or self.has_val_part:
            samples = self._site_samples(split)
            samples = self._labelled(samples) if split == "train" else samples
        else:
            samples = self._labelled(carve_val(self._site_samples("train"), split, self.val_fraction, self.split_seed))
        if not samples:
            raise DataError(f"{where}: the {split} split has no sample (val_fraction={self.val_fraction})", paths=[self.root_path])
        self.samples: list[Sample] = samples
        self.labels = torch.tensor([sample.label for sample in samples], dtype=torch.int64)

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        check_part(partition_of(options["partition"]), options["part"])
        if options["channels"] not in (1, 3):
            raise OptionError("channels", f"must be 1 or 3, not {options['channels']!r}")
        return DataSpec(
            task=cls.task,
            class_names=cls._classes(options),
            in_channels=options["channels"],
            image_size=image_size(options["img_size"]) if cls.spatial_dims == 2 else None,
            ignore_index=None,
            spatial_dims=cls.spatial_dims,
        )

    @classmethod
    def _classes(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The declared class names, from the options."""
        raise NotImplementedError

    @property
    def has_val_part(self) -> bool:
        """Whether the release has a val part of its own (read as ``_release_samples("val")``);
        else val is carved from the train part."""
        return False

    def _release_samples(self, release: Release) -> list[Sample]:
        """The samples of the release's train or test part (or its own val part, see
        :attr:`has_val_part`), in a stable order, with class ids in ``0 ... K-1`` (a reader
        raises DataError naming the file for any other)."""
        raise NotImplementedError

    def _pixels(self, sample: Sample) -> np.ndarray:
        """The image of ``sample``: uint8 (H, W, C) with C = ``self.in_channels`` (or float32
        in [0, 1]); volumes: (D, H, W, C)."""
        raise NotImplementedError

    @cached_property
    def _releases(self) -> dict[str, list[Sample]]:
        """Both parts of the release, checked: unique ids, class ids among the declared."""
        releases = {}
        for release in ("train", "val", "test") if self.has_val_part else ("train", "test"):
            samples = self._release_samples(release)
            duplicates = sorted(i for i, n in Counter(s.id for s in samples).items() if n > 1)
            if duplicates:
                raise DataError(f"{type(self).__name__}: several images share the ids {duplicates[:10]}", paths=[self.root_path])
            for sample in samples:
                if not 0 <= sample.label < len(self.class_names):
                    raise DataError(
                        f"{sample.source}: image {sample.id!r} has class id {sample.label}, outside the declared classes "
                        f"0 ... {len(self.class_names) - 1} {list(self.class_names)}",
                        paths=[sample.source],
                    )
            releases[release] = samples
        return releases

    def _site_samples(self, release: str) -> list[Sample]:
        """The samples of ``release`` that belong to this site (all without a partition)."""
        if self.partition is None:
            return self._releases[release]
        sites, assigned = self.site_assignment()
        if self.partition.scheme == "column" and self.part not in sites:
            raise DataError(
                f"{type(self).__name__} at {self.root_path}: part {self.part!r} is not a value of the partition's column "
                f"{self.partition.column!r} (values: {sites})",
                paths=[self.root_path],
            )
        site = sites.index(self.part)
        return [sample for sample, s in zip(self._releases[release], assigned[release]) if s == site]

    def site_assignment(self) -> tuple[list, dict[str, np.ndarray]]:
        """The partition's sites (indices, or the column's values) and the site of every
        sample of each release part (``{"train": (N_train,), "test": (N_test,)}``, and
        ``"val"`` for a release with its own)."""
        partition = self.partition
        if partition is None:
            raise ValueError("no partition is set")
        releases = self._releases
        if partition.scheme == "column":
            values = {}
            for release, samples in releases.items():
                values[release] = [dict(sample.metadata).get(partition.column) for sample in samples]
                missing = [s.id for s, v in zip(samples, values[release]) if v is None]
                if missing:
                    raise DataError(
                        f"{type(self).__name__} at {self.root_path}: images {missing[:5]} have no value in the metadata column "
                        f"{partition.column!r} of partition.column",
                        paths=[self.root_path],
                    )
            return assign_by_column(partition, values)
        labels = {release: np.array([s.label for s in samples], dtype=np.int64) for release, samples in releases.items()}
        try:
            return list(range(partition.num_sites)), assign(partition, labels, len(self.class_names))
        except PartitionError as error:
            raise DataError(f"{type(self).__name__} at {self.root_path}: partition: {error}", paths=[self.root_path]) from None

    @property
    def sample_ids(self) -> list[str]:
        return [sample.id for sample in self.samples]

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def class_counts(self) -> list[int]:
        """Samples of each class in this split (unique samples), K entries."""
        return torch.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._row(index)
        sample = self.samples[row]
        return {"image": self._to_tensor(self._pixels(sample)), "label": self.labels[row].clone(), "id": sample.id}

    def _to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """float32 (C, *spatial) in out_range of ``pixels`` (*spatial, C), uint8 or float in
        [0, 1], resized to ``img_size`` (2D)."""
        if self.img_size is not None and pixels.ndim == 3 and pixels.shape[:2] != self.img_size:
            pixels = resize_bilinear(pixels, self.img_size)
        low, high = self.out_range
        white = 255.0 if pixels.dtype == np.uint8 else 1.0
        array = pixels.astype(np.float32) * ((high - low) / white) + low
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0)))
