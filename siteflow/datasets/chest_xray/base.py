"""The base class of the multi-label chest X-ray site datasets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from siteflow.config.validation import defaults
from siteflow.datasets.base import SiteDataset, Split
from siteflow.datasets.chest_xray.images import check_xray, read_xray, xray_tensor
from siteflow.datasets.chest_xray.inputs import XrayInput
from siteflow.datasets.chest_xray.labels import (
    BlankPolicy,
    UncertainPolicy,
    encode_labels,
    resolve_labels,
)
from siteflow.datasets.errors import DataError, MissingFileError, empty_split
from siteflow.datasets.spec import DataSpec, image_size
from siteflow.datasets.splits import carve_val

Release = Literal["train", "test"]


@dataclass(frozen=True)
class Record:
    """One image of a release: its id, image file, patient, raw label values (1, 0, -1 or
    NaN, in the dataset's ``label_names`` order) and the label file that lists it."""

    id: str
    image: Path
    patient: str
    values: tuple[float, ...]
    listed_in: Path


class MultiLabelDataset(SiteDataset):
    """One site's split of a chest X-ray release with multi-label findings.

    A subclass names the findings its release can label (``all_labels``, canonical names, see
    :func:`~siteflow.datasets.chest_xray.labels.canonical_label`) and lists the release's
    images with :meth:`_release_records`. ``labels`` picks the findings this site uses and
    their order (default: ``all_labels``); they become ``label_names``.

    Splits: ``test`` is the release's test part. ``val`` and ``train`` divide its training
    part **by patient**: ``val_fraction`` of the patients (sorted ids, permutation seeded by
    ``split_seed``) go to val with all their images, so no patient is in two splits.

    Item ``i``: ``{"image": float32 (C, H, W), "labels": float32 (L,), "mask": float32 (L,),
    "id": str}``. The image is the radiograph's grey levels (0 black, 1 white; see
    :func:`~siteflow.datasets.chest_xray.images.read_xray`), resized bilinearly to
    ``img_size`` (None: native size), mapped linearly from [0, 1] to ``out_range``, repeated
    over ``channels`` (1 or 3). ``labels`` are 0 / 1; ``mask`` is 1 where the label is known
    and 0 where it is not. Uncertain cells (-1) follow ``uncertain``: "zeros" (negative),
    "ones" (positive) or "ignore" (unknown); blank cells follow ``blank``: "zeros" or
    "ignore". The other options are those of :class:`~siteflow.datasets.base.SiteDataset`,
    with the defaults of the chest X-ray releases here. A missing or bad image file is a
    DataError naming it (and the label file that lists it, if missing), when an item is read
    as in :meth:`~siteflow.datasets.base.SiteDataset.check`.

    A subclass's ``__init__`` stores its own options, then calls this one (which calls
    :meth:`_release_records`).

    Args:
        labels: the findings to predict, in this order (canonical names or the release's
            spellings, each once); None (the default): every finding of ``all_labels``.
        channels: 1 (the default) or 3: how many times the grey image is repeated along the
            channel axis (the model's ``in_channels``).
        uncertain: what an uncertain cell (-1) becomes: ``"zeros"`` (the default, a
            negative), ``"ones"`` (a positive) or ``"ignore"`` (unknown: masked out of the loss).
        blank: what a blank cell (not labelled) becomes: ``"zeros"`` (the default, a negative)
            or ``"ignore"`` (unknown: masked out of the loss).
        img_size: ``[height, width]`` in pixels that radiographs are resized to (bilinearly);
            None: their native size (which then differs between images).
        out_range: ``[low, high]``, low < high: the values that black and white become
            (default ``[0, 1]``).
        val_fraction: share, in [0, 1), of the training part's patients (with all their
            images) carved out as the val split, drawn with ``split_seed``; the rest is train.
    """

    task: ClassVar[str] = "multilabel"
    ignore_index: ClassVar[int | None] = None
    all_labels: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        split: Split,
        *,
        labels: list[str] | None = None,
        channels: Literal[1, 3] = 1,
        uncertain: UncertainPolicy = "zeros",
        blank: BlankPolicy = "zeros",
        img_size: tuple[int, ...] | None = (224, 224),
        out_range: tuple[float, ...] = (0.0, 1.0),
        val_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels!r}")
        if uncertain not in ("zeros", "ones", "ignore"):
            raise ValueError(f"uncertain must be 'zeros', 'ones' or 'ignore', not {uncertain!r}")
        if blank not in ("zeros", "ignore"):
            raise ValueError(f"blank must be 'zeros' or 'ignore', not {blank!r}")
        super().__init__(split, img_size=img_size, out_range=out_range, val_fraction=val_fraction, **kwargs)
        self.in_channels = channels
        self.label_names = resolve_labels(labels, self.all_labels, type(self).__name__)

        records = self._release_records(self.release_part)
        duplicates = sorted(i for i, n in Counter(r.id for r in records).items() if n > 1)
        if duplicates:
            raise DataError(f"{type(self).__name__}: several images share the ids {duplicates[:10]}")
        available = len(records)
        if split != "test":
            patients = sorted({record.patient for record in records})
            chosen = set(carve_val(patients, split, val_fraction, self.split_seed))
            records = self._labelled([record for record in records if record.patient in chosen])
        if not records:
            raise empty_split(type(self).__name__, split, available, val_fraction)
        self.records: list[Record] = records
        values = np.array([record.values for record in records], dtype=np.float32)  # (N, L)
        targets, mask = encode_labels(values, uncertain, blank)
        self.targets = torch.from_numpy(targets)  # (N, L)
        self.mask = torch.from_numpy(mask)  # (N, L)

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        return DataSpec(
            task=cls.task,
            class_names=resolve_labels(options["labels"], cls.all_labels, cls.__name__),
            in_channels=options["channels"],
            image_size=image_size(options["img_size"]),
            ignore_index=cls.ignore_index,
        )

    @classmethod
    def input_preprocessing(cls, **kwargs: Any) -> XrayInput:
        """Radiographs read, resized and scaled as the items' images are."""
        options = {**defaults(cls), **kwargs}
        return XrayInput(options["channels"], image_size(options["img_size"]), tuple(map(float, options["out_range"])))

    def _release_records(self, release: Release) -> list[Record]:
        """The images of the release's train or test part, in a stable order, with raw values
        of ``self.label_names``."""
        raise NotImplementedError

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the unique images of this split, in a stable order."""
        return [record.id for record in self.records]

    @property
    def num_samples(self) -> int:
        return len(self.records)

    def positive_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Positives and known entries per label over this split's unique images: int64 (L,)
        each. On the train split they give BCE's ``pos_weight = (known - P) / P``."""
        positives = (self.targets * self.mask).sum(dim=0)
        return positives.to(torch.int64), self.mask.sum(dim=0).to(torch.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self._row(index)
        return {
            "image": self._to_tensor(read_xray(self._image_file(row))),
            "labels": self.targets[row].clone(),
            "mask": self.mask[row].clone(),
            "id": self.records[row].id,
        }

    def _check_row(self, row: int) -> None:
        """The image file's header and completeness (see
        :func:`~siteflow.datasets.chest_xray.images.check_xray`)."""
        check_xray(self._image_file(row))

    def _image_file(self, row: int) -> Path:
        """The image file of unique image ``row``; raises MissingFileError naming it and the
        label file that lists it when it does not exist."""
        record = self.records[row]
        if not record.image.is_file():
            raise MissingFileError(
                f"image {record.image} listed in {record.listed_in} does not exist", paths=[record.image]
            )
        return record.image

    def _to_tensor(self, grey: np.ndarray) -> torch.Tensor:
        """float32 (C, H, W) in out_range of grey levels float32 (H, W) in [0, 1]."""
        return xray_tensor(grey, self.img_size, self.out_range, self.in_channels)


class FrontalLateralDataset(MultiLabelDataset):
    """A release with frontal and lateral views whose images ``read_records`` lists;
    ``frontal_only`` keeps the frontal views.

    Args:
        frontal_only: keep only the frontal views (CheXpert's ``Frontal`` rows, MIMIC-CXR's
            PA and AP views), as the default True does; False reads the lateral views too.
    """

    read_records: ClassVar[Callable[[Path, Release, tuple[str, ...], bool], list[Record]]]

    def __init__(self, split: Split, *, frontal_only: bool = True, **kwargs: Any) -> None:
        self.frontal_only = frontal_only
        super().__init__(split, **kwargs)

    def _release_records(self, release: Release) -> list[Record]:
        return self.read_records(self.root_path, release, self.label_names, self.frontal_only)
