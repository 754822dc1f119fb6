"""Volume segmentation datasets: one site's split of a release of 3D volumes (CT, MRI), read
through SimpleITK, preprocessed once (:mod:`~siteflow.datasets.volumes.preprocessing`) and
kept in the decode cache, trained on 3D patches."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch

from siteflow.config.validation import defaults
from siteflow.core.extras import optional_module
from siteflow.datasets.base import SiteDataset, Split
from siteflow.datasets.decode_cache import (
    DEFAULT_CACHE_DIR,
    CacheKind,
    DecodeCache,
    Decoded,
    cache_folder,
)
from siteflow.datasets.errors import DataError, empty_split
from siteflow.datasets.patches import (
    PatchSampler,
    checked_foreground_share,
    checked_patch_size,
    cut,
    require_patch_fits,
)
from siteflow.datasets.sampling import ItemIndex, split_index
from siteflow.datasets.spec import DataSpec
from siteflow.datasets.splits import carve_val
from siteflow.datasets.volumes.augmentation import VolumeAugmentation, VolumePreset
from siteflow.datasets.volumes.inputs import VolumeInput
from siteflow.datasets.volumes.layouts import VolumeCase
from siteflow.datasets.volumes.preprocessing import (
    CT_SAMPLES_PER_CASE,
    CtStatistics,
    Interpolation,
    Normalisation,
    Preprocessing,
    checked_orientation,
    checked_spacing,
    checked_window,
    ct_statistics,
    to_source_grid,
)
from siteflow.datasets.volumes.readers import read_channels, read_image, read_label

sitk = optional_module("SimpleITK", "volumes", "reading volumes")

SPATIAL_MARGIN = 1.5
"""Spatial augmentation of a patch runs on a window of this many times the patch's size (per
axis) around it, then the patch is cut from the window's centre."""
T = TypeVar("T")


def checked_test_fraction(value: float, key: str = "test_fraction") -> float:
    """``value`` of the ``test_fraction`` option; ValueError naming ``key`` unless in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{key} must be in [0, 1) (0: the release's own labelled test part), not {value!r}")
    return float(value)


def checked_shard(shard: int, num_shards: int) -> tuple[int, int]:
    """``(shard, num_shards)`` of the options; ValueError naming the option unless
    ``num_shards >= 1`` and ``1 <= shard <= num_shards``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, not {num_shards!r}")
    if not 1 <= shard <= num_shards:
        raise ValueError(f"shard must be between 1 and num_shards={num_shards}, not {shard!r}")
    return shard, num_shards


def shard_of(items: list[T], shard: int, num_shards: int) -> list[T]:
    """Run ``shard`` (1 ... ``num_shards``) of ``items`` cut into ``num_shards`` contiguous runs
    whose sizes differ by at most one (the first runs hold the extra items)."""
    size, extra = divmod(len(items), num_shards)
    start = (shard - 1) * size + min(shard - 1, extra)
    return items[start : start + size + (shard <= extra)]


def preprocessing_options(
    spacing: tuple[float, ...] | None,
    interpolation: Interpolation,
    orientation: str | None,
    normalisation: Normalisation,
    ct_window: tuple[float, ...] | None,
    crop_nonzero: bool,
    modality_is_ct: bool,
) -> Preprocessing:
    """The dataset options' :class:`Preprocessing`, checked, ``auto`` normalisation resolved
    (``ct`` for a CT release, else ``mri``); without CT statistics."""
    resolved = ("ct" if modality_is_ct else "mri") if normalisation == "auto" else normalisation
    return Preprocessing(
        checked_spacing(spacing), interpolation, checked_orientation(orientation), resolved, checked_window(ct_window), crop_nonzero
    )


class VolumeDataset(SiteDataset):
    """One site's split of a 3D segmentation release.

    A subclass lists the cases of the release's train and test parts (:meth:`_release_cases`)
    and says what the label files hold (:meth:`_label_values`: the label value of each class,
    background first) and how many channels the images have. ``test`` is the release's test
    part, or with ``test_fraction`` that share of its train part (seeded by ``split_seed``:
    each site carves its own); ``val`` is ``val_fraction`` of the train part that remains
    (seeded by ``split_seed``), ``train`` the rest.

    Items are ``{"image": float32 (C, D, H, W), "label": int64 (D, H, W) class ids, "spacing":
    float64 (3,) the voxel spacing (depth, height, width) in mm, "id": str}``, on the grid of
    the preprocessed case (reoriented, resampled to ``spacing``, cropped, normalised; computed
    once and kept in the decode cache):

    * ``train``: a patch of ``patch_size`` (whole volumes when None), centred on foreground with
      probability ``foreground_share``, augmented (``augmentation``); its randomness comes from
      the item seed of an ``(index, item_seed)`` index; an ``int`` index gives the centre patch.
    * ``val`` and ``test``: the whole preprocessed volume and its label.

    Any problem is a DataError naming the file: an unreadable volume or DICOM series, a 2D image,
    a label whose grid (size, spacing, origin, direction) differs from its image's, a label
    value that is no class's, a patch larger than a volume (train).

    Options, besides ``root_path``, ``val_fraction``, ``split_seed`` and ``num_replica`` of
    :class:`SiteDataset` (``img_size`` must stay None: volumes are resampled to ``spacing``;
    ``out_range`` is not used: intensities are normalised as ``normalisation`` says):

    Args:
        augmentation: ``none``, ``light`` or ``default`` (see
            :mod:`~siteflow.datasets.volumes.augmentation`).
        patch_size: [depth, height, width] of the training patches, None for whole volumes.
        foreground_share: the share of patches centred on a random foreground voxel, in [0, 1].
        cache: where preprocessed cases are kept: ``memory`` (the default: once per run, in
            memory shared by the loader's workers), ``disk`` (``.npy`` files under
            ``cache_dir``, kept across runs) or ``none`` (preprocessed at every read); see
            :mod:`~siteflow.datasets.decode_cache`.
        cache_dir: the ``disk`` cache's folder, a relative path under the working directory
            (default ``.cache/decoded``).
        spacing: target [depth, height, width] spacing in mm (None: each case's own).
        interpolation: of the images when resampling: ``linear`` or ``bspline``.
        orientation: turn every case to this orientation (``RAS``, ``LPS``, ...), or keep it (None).
        normalisation: ``ct``, ``mri``, ``none``, or ``auto`` (``ct`` when the release says its
            modality is CT, else ``mri``).
        ct_window: [low, high] intensities that ``ct`` clips to (None: the 0.5 and 99.5
            percentiles of the foreground voxels of the release's training part); ``ct`` then
            subtracts the mean and divides by the standard deviation of those voxels, clipped
            (nnU-Net's CT normalisation; computed once, kept in the decode cache).
        crop_nonzero: crop every case to its non-zero box.
        test_fraction: 0 (the default): the test split is the release's labelled test part
            (``labelsTs``, ``test/``); above 0: that share of the release's training cases
            (at least one, rounded half up), drawn by ``split_seed``, is the test split and
            the release's test part is not read: for releases that label only their training
            cases, as the Decathlon does. The CT statistics come from the rest.
        num_shards: how many sites one release is split into: each part's cases, sorted by
            id, are cut into ``num_shards`` contiguous runs of near-equal size (before
            ``test_fraction`` and ``val_fraction`` split them). 1 (the default): the whole
            release is one site.
        shard: the run this site holds, 1 ... ``num_shards`` (default 1).
    """

    task: ClassVar[str] = "segmentation"
    takes_item_seeds: ClassVar[bool] = True

    def __init__(
        self,
        split: Split,
        *,
        augmentation: VolumePreset = "none",
        patch_size: tuple[int, ...] | None = None,
        foreground_share: float = 1 / 3,
        cache: CacheKind = "memory",
        cache_dir: str = DEFAULT_CACHE_DIR,
        spacing: tuple[float, ...] | None = None,
        interpolation: Interpolation = "linear",
        orientation: str | None = None,
        normalisation: Normalisation = "auto",
        ct_window: tuple[float, ...] | None = None,
        crop_nonzero: bool = True,
        test_fraction: float = 0.0,
        num_shards: int = 1,
        shard: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(split, **kwargs)
        self.test_fraction = checked_test_fraction(test_fraction)
        self.shard, self.num_shards = checked_shard(shard, num_shards)
        if self.img_size is not None:
            raise ValueError("img_size is for 2D images; volumes are resampled to a voxel size: set spacing")
        self.patch_size = checked_patch_size(patch_size, None, dims=3)
        share = checked_foreground_share(foreground_share)
        self.patches = None if self.patch_size is None else PatchSampler(self.patch_size, share, None)
        self.augmentation = VolumeAugmentation(augmentation)
        self.cache = DecodeCache(cache, cache_folder(cache_dir))
        self.class_names, self.in_channels, modality_is_ct = self._contents()
        self.label_values = self._label_values()
        self.options = preprocessing_options(spacing, interpolation, orientation, normalisation, ct_window, crop_nonzero, modality_is_ct)
        release = self._cases(self.release_part)
        duplicates = sorted(i for i, n in Counter(case.id for case in release).items() if n > 1)
        if duplicates:
            raise DataError(f"{type(self).__name__}: several volumes share the ids {duplicates}")
        available = len(release)
        if split != "test":
            release = self._labelled(carve_val(release, split, self.val_fraction, self.split_seed))
        if not release:
            raise empty_split(type(self).__name__, split, available, self.val_fraction)
        self.cases: list[VolumeCase] = release

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        if options["img_size"] is not None:
            raise ValueError("img_size is for 2D images; volumes are resampled to a voxel size: set spacing")
        VolumeAugmentation(options["augmentation"])
        checked_foreground_share(options["foreground_share"])
        checked_spacing(options["spacing"])
        checked_orientation(options["orientation"])
        checked_window(options["ct_window"])
        checked_test_fraction(options["test_fraction"])
        checked_shard(options["shard"], options["num_shards"])
        DecodeCache(options["cache"], cache_folder(options["cache_dir"]))
        class_names, in_channels, _ = cls._described_contents(options)
        return DataSpec(
            task=cls.task,
            class_names=class_names,
            in_channels=in_channels,
            image_size=None,
            ignore_index=None,
            patch_size=checked_patch_size(options["patch_size"], None, dims=3),
            spatial_dims=3,
        )

    @classmethod
    def input_preprocessing(cls, **kwargs: Any) -> VolumeInput:
        """Volumes reoriented, resampled, cropped and normalised as the items are; CT
        normalisation without a ``ct_window`` lacks the training data's statistics here (see
        :attr:`VolumeInput.needs_statistics`, :attr:`preprocessing`)."""
        options = {**defaults(cls), **kwargs}
        _, in_channels, modality_is_ct = cls._described_contents(options)
        names = ("spacing", "interpolation", "orientation", "normalisation", "ct_window", "crop_nonzero")
        return VolumeInput(in_channels, preprocessing_options(*(options[name] for name in names), modality_is_ct))

    # --- what a subclass says about its release

    @classmethod
    def _described_contents(cls, options: dict[str, Any]) -> tuple[tuple[str, ...], int, bool]:
        """(class names, channels, whether the modality is CT) of the release of ``options``."""
        raise NotImplementedError

    def _contents(self) -> tuple[tuple[str, ...], int, bool]:
        """(class names, channels, whether the modality is CT) of this release."""
        raise NotImplementedError

    def _label_values(self) -> tuple[int, ...]:
        """The value of each class in the label files (class id ``i`` is ``values[i]``)."""
        return tuple(range(len(self.class_names)))

    def _release_cases(self, release: Literal["train", "test"]) -> list[VolumeCase]:
        """The cases of the release's train or test part, sorted by id."""
        raise NotImplementedError

    def _cases(self, part: Literal["train", "test"]) -> list[VolumeCase]:
        """The cases of ``part`` of this site's shard of the release: the release's own, or
        with ``test_fraction`` the test part carved from the shard's train part (see
        :func:`~siteflow.datasets.splits.carve_val`) and the train part the rest."""
        if self.test_fraction == 0:
            return shard_of(self._release_cases(part), self.shard, self.num_shards)
        carved = "val" if part == "test" else "train"
        cases = shard_of(self._release_cases("train"), self.shard, self.num_shards)
        return carve_val(cases, carved, self.test_fraction, self.split_seed)

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing options, with the CT statistics of the training data for ``ct``."""
        if self.options.normalisation != "ct":
            return self.options
        return dataclasses.replace(self.options, ct_statistics=self._ct_statistics())

    def _ct_statistics(self) -> CtStatistics:
        """:func:`~siteflow.datasets.volumes.preprocessing.ct_statistics` of the foreground
        (label not 0) of the training part (:meth:`_cases`), :data:`CT_SAMPLES_PER_CASE` voxels
        drawn from each case (seeded by its position), through the decode cache."""
        cases = self._cases("train")

        def compute() -> Decoded:
            samples: list[list[np.ndarray]] = [[] for _ in range(self.in_channels)]
            for index, case in enumerate(cases):
                channels = read_channels(list(case.images))
                foreground = read_label(case.label, channels[0], case.image) != 0
                rng = np.random.default_rng(index)
                for channel, image in enumerate(channels[: self.in_channels]):
                    values = sitk.GetArrayFromImage(image)[foreground]
                    samples[channel].append(rng.choice(values, min(len(values), CT_SAMPLES_PER_CASE), replace=False))
            found = [np.concatenate(parts) for parts in samples]
            if not all(len(values) for values in found):
                raise DataError(f"{self.root_path}: no training case has foreground voxels to normalise CT with")
            return Decoded(np.array(ct_statistics(found, self.options.ct_window)), np.zeros(0, dtype=np.int64))

        files = [path for case in cases for path in self._case_files(case)]
        key = {"dataset": f"{type(self).__module__}.{type(self).__qualname__}", "part": "ct_statistics",
               "ct_window": self.options.ct_window, "in_channels": self.in_channels}
        return tuple(tuple(float(v) for v in row) for row in self.cache.get(files, key, compute).image)

    # --- items

    @property
    def num_samples(self) -> int:
        return len(self.cases)

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the unique cases of this split, in a stable order."""
        return [case.id for case in self.cases]

    def __getitem__(self, index: ItemIndex) -> dict[str, Any]:
        position, seed = split_index(index)
        row = self._row(position)
        decoded, grid = self._case(row)
        image, label = decoded.image, decoded.label
        if self.split == "train":
            rng = None if seed is None else np.random.default_rng(seed)
            image, label = self._training_view(image, label, self.cases[row].image, rng)
        spacing = grid[2::-1]  # SimpleITK's (x, y, z) -> (depth, height, width)
        return {
            "image": torch.from_numpy(np.array(image, dtype=np.float32)),  # a copy: cached arrays are read-only
            "label": torch.from_numpy(np.array(label, dtype=np.int64)),
            "spacing": torch.from_numpy(spacing.copy()),
            "id": self.cases[row].id,
        }

    def _training_view(
        self, image: np.ndarray, label: np.ndarray, path: Path, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The patch and augmentation of image float32 (C, D, H, W) and label int64 (D, H, W):
        spatial steps on a window of :data:`SPATIAL_MARGIN` times the patch around it, the patch
        cut from the window's centre, then the intensity steps."""
        augmentation = self.augmentation
        moving = rng is not None and augmentation.has_spatial
        if self.patches is not None:
            require_patch_fits(self.patches.size, label.shape, path)
            size = self.patches.size
            window = tuple(math.ceil(SPATIAL_MARGIN * side) for side in size) if moving else size
            centre = self.patches.centre(label, rng)
            image = cut(image.transpose(1, 2, 3, 0), centre, window, 0).transpose(3, 0, 1, 2)
            label = cut(label, centre, window, 0)
        if rng is None or not augmentation:
            return image, label
        image, label = augmentation.move(image, label, rng)
        if self.patches is not None and label.shape != self.patches.size:
            centre = tuple(side // 2 for side in label.shape)
            image = cut(image.transpose(1, 2, 3, 0), centre, self.patches.size, 0).transpose(3, 0, 1, 2)
            label = cut(label, centre, self.patches.size, 0)
        return augmentation.recolour(np.ascontiguousarray(image), rng), label

    # --- decoding, through the decode cache

    def _cache_key(self) -> dict[str, Any]:
        """What, besides its files, makes a case's preprocessed arrays (the decode cache's key)."""
        return {
            "dataset": f"{type(self).__module__}.{type(self).__qualname__}",
            "label_values": list(self.label_values),
            "in_channels": self.in_channels,
            **self.preprocessing.key(),
        }

    def _files(self, row: int) -> list[Path]:
        return self._case_files(self.cases[row])

    @staticmethod
    def _case_files(case: VolumeCase) -> list[Path]:
        """The files of ``case``: its image files (every file of a DICOM series folder) and its label."""
        images = [file for image in case.images for file in (sorted(image.iterdir()) if image.is_dir() else [image])]
        return [*images, case.label]

    def _decoded(self, row: int) -> Decoded:
        """The preprocessed case ``row``: image float32 (C, D, H, W), label int64 (D, H, W)."""

        def decode() -> Decoded:
            decoded, grid = self._preprocess(row)
            self._cached_grid(row, lambda: grid)
            return decoded

        return self.cache.get(self._files(row), self._cache_key(), decode)

    def grid(self, row: int) -> np.ndarray:
        """The grid of preprocessed case ``row``, float64 (15,): spacing (x, y, z), origin
        (x, y, z), direction (3x3, row-major), as SimpleITK gives them."""
        return self._cached_grid(row, lambda: self._preprocess(row)[1])

    def _cached_grid(self, row: int, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The grid of case ``row`` from the decode cache (an entry of its own), else ``make()``'s."""
        key = {**self._cache_key(), "part": "grid"}
        return self.cache.get(self._files(row), key, lambda: Decoded(make(), np.zeros(0, dtype=np.int64))).image

    def _case(self, row: int) -> tuple[Decoded, np.ndarray]:
        """The preprocessed case ``row`` and its grid (see :meth:`grid`), preprocessed once."""
        if self.cache.kind == "none":
            return self._preprocess(row)
        return self._decoded(row), self.grid(row)

    def _preprocess(self, row: int) -> tuple[Decoded, np.ndarray]:
        """Case ``row`` read and preprocessed: its arrays and its grid (see :meth:`grid`)."""
        case = self.cases[row]
        channels = read_channels(list(case.images))
        if len(channels) != self.in_channels:
            raise DataError(
                f"volume {case.image} has {len(channels)} channels, the release declares {self.in_channels}",
                paths=[case.image],
            )
        ids = self._class_ids(read_label(case.label, channels[0], case.image), case.label)
        label = sitk.GetImageFromArray(ids.astype(np.uint8))
        label.CopyInformation(channels[0])
        image, label_ids, grid = self.preprocessing(channels, label)
        geometry = np.array([*grid.GetSpacing(), *grid.GetOrigin(), *grid.GetDirection()], dtype=np.float64)
        return Decoded(image, label_ids), geometry

    def _class_ids(self, values: np.ndarray, path: Path) -> np.ndarray:
        """Class ids int64 (D, H, W) of the raw label ``values``; DataError naming ``path`` for
        a value that is no class's."""
        found = np.unique(values)
        unknown = sorted(int(v) for v in found if v not in self.label_values)
        if unknown:
            raise DataError(
                f"label {path} holds the values {unknown}, which are no class's (the classes' values: "
                f"{dict(zip(self.label_values, self.class_names))})",
                paths=[path],
            )
        lookup = np.zeros(max(self.label_values) + 1, dtype=np.int64)
        lookup[list(self.label_values)] = np.arange(len(self.label_values))
        return lookup[values]

    def preload(self) -> None:
        """Preprocesses every case of the split into the decode cache now (nothing for ``cache: none``)."""
        if self.cache.kind != "none":
            for row in range(self.num_samples):
                self._decoded(row)

    def label_sizes(self) -> set[tuple[int, ...]]:
        """The (D, H, W) of the labels of this split's items: the patch for a train split that
        has one, else the preprocessed cases' sizes."""
        if self.split == "train" and self.patch_size is not None:
            return {self.patch_size}
        return {tuple(self._decoded(row).label.shape) for row in range(self.num_samples)}

    def _check_row(self, row: int) -> None:
        """Reads and preprocesses the case as an item does (every DataError above), and checks
        that a training patch fits in it."""
        label = self._decoded(row).label
        if self.split == "train" and self.patch_size is not None:
            require_patch_fits(self.patch_size, label.shape, self.cases[row].image)

    def on_source_grid(self, case_id: str, pred: np.ndarray) -> sitk.Image:
        """A prediction int (D, H, W) on the preprocessed grid of case ``case_id`` brought back
        to the grid of its image file (size, spacing, origin, direction; see
        :func:`~siteflow.datasets.volumes.preprocessing.to_source_grid`): a uint8 SimpleITK image."""
        row = self.sample_ids.index(case_id)
        values = self.grid(row)
        grid = sitk.Image([int(n) for n in pred.shape[::-1]], sitk.sitkUInt8)
        grid.SetSpacing(values[:3].tolist())
        grid.SetOrigin(values[3:6].tolist())
        grid.SetDirection(values[6:].tolist())
        return to_source_grid(pred, grid, read_image(self.cases[row].image))
