"""MedMNIST's ``.npz`` files (2D and 3D collections), which the user downloads: siteflow never
fetches them."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from siteflow.core.errors import OptionError
from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.classification.base import ClassificationDataset, Release, Sample
from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.spec import DataSpec

NUM_CLASSES = {
    "pathmnist": 9, "dermamnist": 7, "octmnist": 4, "pneumoniamnist": 2, "retinamnist": 5, "breastmnist": 2,
    "bloodmnist": 8, "tissuemnist": 8, "organamnist": 11, "organcmnist": 11, "organsmnist": 11,
    "organmnist3d": 11, "nodulemnist3d": 2, "adrenalmnist3d": 2, "fracturemnist3d": 3, "vesselmnist3d": 2, "synapsemnist3d": 2,
}
"""The multi-class collections of MedMNIST v2 and their class counts (chestmnist, multi-label,
is not one)."""


def medmnist_classes(collection: str, classes: list[str] | None) -> tuple[str, ...]:
    """``classes``, or ``class_0 ...`` for the collection's count; OptionError when the
    collection is unknown or ``classes`` has another count."""
    if collection not in NUM_CLASSES:
        raise OptionError("collection", f"{collection!r} is not a multi-class MedMNIST collection; choose one of {sorted(NUM_CLASSES)}")
    count = NUM_CLASSES[collection]
    if classes is None:
        return tuple(f"class_{k}" for k in range(count))
    if len(classes) != count or len(set(classes)) != count:
        raise OptionError("classes", f"{collection} has {count} classes: give {count} distinct names, not {classes}")
    return tuple(classes)


@DATASETS.register("medmnist")
class MedMnistDataset(ClassificationDataset):
    """A MedMNIST collection's ``.npz`` at ``<root_path>/<collection>.npz`` (or
    ``<collection>_<size>.npz`` for MedMNIST+ sizes), as the MedMNIST site serves it: arrays
    ``{train,val,test}_images`` uint8 (N, H, W), (N, H, W, 3) or, for 3D collections,
    (N, D, H, W), and ``{train,val,test}_labels`` (N, 1). The official train and test parts are
    the release's; ``val`` is MedMNIST's val part when ``val_fraction`` is 0 (the default),
    else carved from train (MedMNIST's val part is then unused). A label outside the collection's classes is a DataError naming the file.

    Image ids: ``<part>_<row>``. Items: see :class:`ClassificationDataset`: 2D collections
    (C, H, W) with C = ``channels`` (grey repeated, or RGB converted to grey), 3D (1, D, H, W).

    Args:
        collection: e.g. ``dermamnist``, ``organmnist3d`` (see :data:`NUM_CLASSES`).
        size: the MedMNIST+ image side (64, 128, 224), None for the 28-pixel files.
        classes: the class names (default ``class_0`` ...).
        channels: 1 (grey; RGB collections are converted) or 3 (grey repeated, RGB kept); 2D
            collections only.
        img_size: (H, W) the 2D images are resized to; null keeps the collection's size.
        val_fraction: share of the train part carved out for validation (seeded); 0 uses
            MedMNIST's own val part.
        **kwargs: the options of :class:`ClassificationDataset`.
    """

    def __init__(
        self,
        split: Split,
        *,
        collection: str = "dermamnist",
        size: int | None = None,
        classes: list[str] | None = None,
        channels: int = 1,
        img_size: tuple[int, ...] | None = None,
        val_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.class_names = medmnist_classes(collection, classes)
        self.collection = collection
        self.size = size
        if collection.endswith("3d"):
            if channels != 1 or img_size is not None:
                raise ValueError(f"{collection} holds volumes: channels must be 1 and img_size null")
        self.spatial_dims = 3 if collection.endswith("3d") else 2
        super().__init__(split, channels=channels, img_size=img_size, val_fraction=val_fraction, **kwargs)

    @classmethod
    def _classes(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return medmnist_classes(options["collection"], options["classes"])

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        spec = super()._spec(options)
        if not options["collection"].endswith("3d"):
            return spec
        if options["channels"] != 1 or options["img_size"] is not None:
            raise OptionError("channels", f"{options['collection']} holds volumes: channels must be 1 and img_size null")
        return DataSpec(spec.task, spec.class_names, 1, None, None, spatial_dims=3)

    @property
    def file(self) -> Path:
        name = self.collection if self.size is None else f"{self.collection}_{self.size}"
        return self.root_path / f"{name}.npz"

    @cached_property
    def _arrays(self) -> np.lib.npyio.NpzFile:
        if not self.file.is_file():
            raise MissingFileError(f"{self.file} does not exist: download it from MedMNIST (siteflow fetches nothing)", paths=[self.file])
        try:
            return np.load(self.file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{self.file}: not a readable .npz file ({error})", paths=[self.file]) from None

    def _labels_of(self, part: str) -> np.ndarray:
        key = f"{part}_labels"
        if key not in self._arrays or f"{part}_images" not in self._arrays:
            raise DataError(f"{self.file}: the arrays {part}_images and {part}_labels are needed (found {sorted(self._arrays)})", paths=[self.file])
        labels = self._arrays[key].reshape(len(self._arrays[key]), -1)
        if labels.shape[1] != 1:
            raise DataError(f"{self.file}: {key} has {labels.shape[1]} columns: a multi-label collection is not multi-class", paths=[self.file])
        return labels[:, 0].astype(np.int64)

    @property
    def has_val_part(self) -> bool:
        return self.val_fraction == 0

    def _release_samples(self, release: Release) -> list[Sample]:
        return [Sample(f"{release}_{row}", int(label), self.file, row) for row, label in enumerate(self._labels_of(release))]

    @cached_property
    def _images(self) -> dict[str, np.ndarray]:
        """The image arrays of the parts this split reads, loaded once."""
        parts = {sample.id.split("_")[0] for sample in self.samples}
        return {part: self._arrays[f"{part}_images"] for part in parts}

    def _pixels(self, sample: Sample) -> np.ndarray:
        pixels = self._images[sample.id.split("_")[0]][sample.row]
        if self.spatial_dims == 3:
            return pixels[..., None]  # (D, H, W, 1)
        if pixels.ndim == 2:
            return np.repeat(pixels[..., None], self.in_channels, axis=-1)
        if self.in_channels == 1:
            return np.round(pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
        return pixels
