"""The bases of the site datasets of siteflow: :class:`SiteDataset`, the options and checks
every site dataset shares (with :meth:`SiteDataset.check`, the preflight of its files), and
:class:`SegmentationDataset`, the base of the segmentation datasets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from siteflow.config.validation import defaults
from siteflow.datasets.augmentation import Augmentation, PresetName
from siteflow.datasets.decode_cache import DEFAULT_CACHE_DIR, CacheKind, DecodeCache, Decoded, cache_folder
from siteflow.datasets.errors import DataError, combined, empty_split
from siteflow.datasets.files import (
    SampleFiles,
    grey_to_class_ids,
    require_image_size,
    resize_nearest,
    scaled_tensor,
    unit_pixels,
)
from siteflow.datasets.image_files import check_image, native_size, read_grey, read_pixels
from siteflow.datasets.inputs import ImageInput, InputPreprocessing
from siteflow.datasets.patches import (
    PatchSampler,
    centre_of,
    checked_foreground_share,
    checked_patch_size,
    cut,
    require_patch_fits,
)
from siteflow.datasets.sampling import ItemIndex, split_index
from siteflow.datasets.spec import DataSpec, image_size
from siteflow.datasets.splits import carve_val

Split = Literal["train", "val", "test"]
SPLITS = ("train", "val", "test")
T = TypeVar("T")


def check_shared_options(out_range: Sequence[float], val_fraction: float, num_replica: int, label_fraction: float = 1.0) -> None:
    """Raise ValueError, naming the option, for values of the options every site dataset
    shares that no data could make valid."""
    if len(out_range) != 2 or not out_range[0] < out_range[1]:
        raise ValueError(f"out_range must be [low, high] with low < high, not {list(out_range)!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction!r}")
    if num_replica < 1:
        raise ValueError(f"num_replica must be >= 1, not {num_replica!r}")
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], not {label_fraction!r}")


def labelled_part(items: Sequence[T], fraction: float, seed: int) -> list[T]:
    """The ``fraction`` of ``items`` (a training split, in a stable order) whose labels are
    kept: ``round(fraction * len(items))`` of them, at least one, at the first positions of a
    permutation seeded by ``seed`` (a stream of its own: not the val split's); in input order."""
    count = max(1, round(fraction * len(items)))
    chosen = set(np.random.default_rng([seed, 1]).permutation(len(items))[:count].tolist())
    return [item for position, item in enumerate(items) if position in chosen]


class SiteDataset(Dataset):
    """One site's split of a release: the options every site dataset shares, declared and
    checked here once.

    Options: ``root_path``, the release's folder; ``img_size``, the (height, width) images
    are resized to (None: their native size); ``out_range``, the values that black and white
    become; ``val_fraction`` and ``split_seed``, the val split that a subclass carves from the
    release's training part (see :func:`~siteflow.datasets.splits.carve_val`); ``num_replica``,
    how many times the train split repeats its samples to lengthen an epoch (val and test never
    repeat); ``label_fraction``, the share of the train split whose labels the site keeps
    (label-efficiency studies: the train split holds only those samples, drawn with
    ``split_seed``, per site; a task without labels, masked image modelling, reads every
    image: it sets 1). A subclass's ``__init__`` takes its own options and passes the others on with
    ``**kwargs``: the config layer follows them here (see
    :func:`~siteflow.config.validation.schema`). A subclass may override a default by
    declaring the option again.

    :meth:`describe` tells from the options alone what the items look like; :meth:`check`
    checks the split's files before training.

    Args:
        root_path: the release's folder (a relative path starts at the working directory);
            required, and checked to exist before training.
        img_size: ``[height, width]`` in pixels that images are resized to (bilinearly);
            None (the default): each image's native size.
        out_range: ``[low, high]``, low < high: the values that black and white become, the
            pixels mapped linearly in between (default ``[-1, 1]``).
        val_fraction: share, in [0, 1), of the release's training part carved out as the val
            split (rounded half up, at least one sample when above 0); the rest is train. 0:
            no val split.
        split_seed: seed of the permutation that picks the val samples (and, with
            ``label_fraction``, the labelled ones); another seed, another split.
        num_replica: how many times, >= 1, the train split repeats its samples to lengthen an
            epoch (val and test never repeat).
        label_fraction: share, in (0, 1], of the train split whose labels the site keeps
            (rounded, at least one sample, drawn with ``split_seed``); the train split holds
            only those samples. 1 (the default): every sample.
    """

    task: ClassVar[str]
    site_keys: ClassVar[tuple[str, ...]] = ()
    """Options that say which site's data an entry reads, where they have a default: the
    config must give them for every site (a site without one would read the default
    location, another site's data), or validation refuses it naming the key."""

    def __init__(
        self,
        split: Split,
        *,
        root_path: str,
        img_size: tuple[int, ...] | None = None,
        out_range: tuple[float, ...] = (-1.0, 1.0),
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_replica: int = 1,
        label_fraction: float = 1.0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        check_shared_options(out_range, val_fraction, num_replica, label_fraction)
        super().__init__()
        self.split = split
        self.root_path = Path(root_path)
        self.img_size = image_size(img_size)
        self.out_range = (float(out_range[0]), float(out_range[1]))
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_replica = num_replica if split == "train" else 1
        self.label_fraction = label_fraction

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        """Paths that must exist before training, keyed by the kwarg that sets them."""
        return {"root_path": Path(kwargs["root_path"])} if "root_path" in kwargs else {}

    @classmethod
    def describe(cls, **kwargs: Any) -> DataSpec:
        """What the items of this dataset built with the config options ``kwargs`` look like
        (the declared defaults fill in the options they omit), from the options alone: no
        file is read, nothing is generated."""
        options = {**defaults(cls), **kwargs}
        check_shared_options(options["out_range"], options["val_fraction"], options["num_replica"], options["label_fraction"])
        return cls._spec(options)

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        """:meth:`describe` from ``options``, which hold every option that has a default."""
        raise NotImplementedError

    @classmethod
    def input_preprocessing(cls, **kwargs: Any) -> InputPreprocessing:
        """How an unlabelled input is made into the model's input, as this dataset built with
        the config options ``kwargs`` makes its items (``siteflow-infer``), from the options
        alone; ValueError for a dataset that does not say (its items are not read from files)."""
        raise ValueError(f"{cls.__name__} does not say how new inputs are preprocessed: siteflow-infer cannot use its models")

    @property
    def release_part(self) -> Literal["train", "test"]:
        """The part of the release this split comes from: val is carved from train."""
        return "test" if self.split == "test" else "train"

    @property
    def num_samples(self) -> int:
        """Unique samples of this split."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples * self.num_replica

    @property
    def label_map_augmentation(self) -> Augmentation | None:
        """The augmentation this split applies to (image, label map) pairs, which can augment
        a batch of them too (relay's replays, :meth:`Augmentation.batch`); None when it
        augments none, as a dataset of image-level labels."""
        return None

    def check(self) -> None:
        """Preflight of this split, cheap enough to run on every site before training: every
        unique sample's files are opened and checked as reading an item checks them (see
        :meth:`_check_row`), without decoding an image's pixels where its format allows.

        Raises one DataError naming the bad files (the first
        :data:`~siteflow.datasets.errors.MAX_LISTED` in its message, all in its ``paths``).
        """
        problems = []
        for row in range(self.num_samples):
            try:
                self._check_row(row)
            except DataError as problem:
                problems.append(problem)
        if problems:
            where = f"{type(self).__name__} {self.split} split of {self.root_path}"
            raise combined(f"{where}: {len(problems)} of {self.num_samples} samples have bad files", problems)

    def _check_row(self, row: int) -> None:
        """Checks the files of unique sample ``row``, raising DataError naming a bad one. This
        default checks nothing: a dataset whose items are not read from files."""

    def _labelled(self, items: list[T]) -> list[T]:
        """The samples of the train split whose labels the site keeps (``label_fraction`` of
        ``items``, see :func:`labelled_part`); other splits keep every sample. A subclass
        calls it on its train split's samples."""
        if self.split != "train" or self.label_fraction == 1.0:
            return items
        return labelled_part(items, self.label_fraction, self.split_seed)

    def _row(self, index: int) -> int:
        """The unique sample that item ``index`` shows; IndexError when out of range."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return index % self.num_samples


class SegmentationDataset(SiteDataset):
    """One site's split of a 2D segmentation release, read lazily from its files.

    A subclass declares its classes and mask convention (``class_names``, background first,
    and ``mask_levels``: the grey value of each class in the mask files, decoded to the
    nearest level) and lists its release's samples in :meth:`_release_samples`. The base class
    then selects the split: ``test`` is the release's test part; ``val`` is ``val_fraction`` of
    the release's training part, drawn by a permutation seeded by ``split_seed``; ``train`` is
    the rest of the training part. The selection is deterministic and val and train are
    disjoint.

    Items are ``{"image": float32 (C, h, w) scaled from [0, 255] (8-bit files) or [0, 65535]
    (16-bit grey files) to out_range, "label": int64 class ids, "id": str}``:

    * ``train``: image and label of (h, w) = ``patch_size`` when set (a patch cut from the
      image at its native resolution, or after resizing to ``img_size`` when that is set too),
      else ``img_size`` or the native size; augmented (``augmentation``). The randomness of an
      item (its patch, its augmentation) comes from its item seed: index it with
      ``(index, item_seed)`` (the training loader's
      :class:`~siteflow.datasets.sampling.SeededSampler` does); a plain ``int`` gives the
      deterministic item: no augmentation, the patch at the image's centre.
    * ``val`` and ``test``: the image at the model's input resolution (``img_size``, or
      native), the label at the image's native resolution, so that metrics are computed
      there; never augmented, never cut.

    Images are resized bilinearly, training labels by nearest neighbour. Image and mask files
    are read as :mod:`~siteflow.datasets.image_files` says (pixel modes, 16-bit masks); a mask
    must have its image's size and follow ``mask_levels`` (see
    :func:`~siteflow.datasets.files.grey_to_class_ids` for the tolerance); any problem is a
    DataError naming the file, when an item is read as in :meth:`check`.

    Options, besides those of :class:`SiteDataset`:

    Args:
        augmentation: a preset (``none``, ``light``, ``default``; see
            :data:`~siteflow.datasets.augmentation.PRESETS`) or a list of steps
            ``{name, kwargs}`` from :data:`~siteflow.datasets.augmentation.TRANSFORMS`;
            applied to the train split only.
        patch_size: [height, width] of the training patches, None for whole images. Every
            training image (after ``img_size``) must be at least that large: a smaller one is
            a DataError naming it, found by :meth:`check`.
        foreground_share: the share of training patches centred on a random foreground pixel
            (neither background nor ignored), in [0, 1]; the others are placed uniformly
            (see :class:`~siteflow.datasets.patches.PatchSampler`).
        cache: ``memory``, ``disk`` or ``none``: where decoded samples are kept (see
            :mod:`~siteflow.datasets.decode_cache`).
        cache_dir: the ``disk`` cache's folder, relative to the working directory.

    A subclass's ``__init__`` stores its own options, then calls this one (which calls
    :meth:`_release_samples`).
    """

    task: ClassVar[str] = "segmentation"
    takes_item_seeds: ClassVar[bool] = True
    class_names: ClassVar[tuple[str, ...]]
    mask_levels: ClassVar[tuple[int, ...]]
    in_channels: ClassVar[int]
    num_classes: ClassVar[int]  # set from class_names

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "class_names" in cls.__dict__:
            cls.num_classes = len(cls.class_names)
            if len(cls.mask_levels) != cls.num_classes:
                raise TypeError(f"{cls.__name__}: one mask level per class is needed")

    def __init__(
        self,
        split: Split,
        *,
        augmentation: PresetName | list[dict] = "none",
        patch_size: tuple[int, ...] | None = None,
        foreground_share: float = 1 / 3,
        cache: CacheKind = "memory",
        cache_dir: str = DEFAULT_CACHE_DIR,
        **kwargs: Any,
    ) -> None:
        super().__init__(split, **kwargs)
        self.patch_size = checked_patch_size(patch_size, self.img_size)
        self.augmentation = Augmentation(
            augmentation,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            out_range=self.out_range,
        )
        share = checked_foreground_share(foreground_share)
        self.patches = None if self.patch_size is None else PatchSampler(self.patch_size, share, self.ignore_index)
        self.cache = DecodeCache(cache, cache_folder(cache_dir))
        release = self._release_samples(self.release_part)
        ids = [sample.id for sample in release]
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise DataError(f"{type(self).__name__}: several files share the ids {duplicates}")
        if split != "test":
            release = self._labelled(carve_val(release, split, self.val_fraction, self.split_seed))
        if not release:
            raise empty_split(type(self).__name__, split, len(ids), self.val_fraction)
        self.samples: list[SampleFiles] = release

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        img_size = image_size(options["img_size"])
        # the options are checked here too, so that the config is refused before any training
        Augmentation(options["augmentation"], in_channels=cls.in_channels, num_classes=cls.num_classes, ignore_index=None)
        checked_foreground_share(options["foreground_share"])
        DecodeCache(options["cache"], cache_folder(options["cache_dir"]))
        return DataSpec(
            task=cls.task,
            class_names=cls.class_names,
            in_channels=cls.in_channels,
            image_size=img_size,
            ignore_index=None,
            patch_size=checked_patch_size(options["patch_size"], img_size),
        )

    @classmethod
    def input_preprocessing(cls, **kwargs: Any) -> InputPreprocessing:
        """Image files read as the items' images are (:func:`~siteflow.datasets.files.unit_pixels`,
        :func:`~siteflow.datasets.files.scaled_tensor`)."""
        options = {**defaults(cls), **kwargs}
        return ImageInput(cls.in_channels, image_size(options["img_size"]), tuple(map(float, options["out_range"])))

    def _release_samples(self, release: Literal["train", "test"]) -> list[SampleFiles]:
        """The samples of the release's train or test part, in a stable (sorted) order."""
        raise NotImplementedError

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the unique samples of this split, in a stable order."""
        return [sample.id for sample in self.samples]

    @property
    def ignore_index(self) -> int | None:
        """The label value of pixels that losses and metrics must skip (none by default)."""
        return None

    @property
    def label_map_augmentation(self) -> Augmentation | None:
        return self.augmentation if self.augmentation else None

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: ItemIndex) -> dict[str, Any]:
        position, seed = split_index(index)
        row = self._row(position)
        sample, decoded = self.samples[row], self._decoded(row)
        image, label = decoded.image, decoded.label
        if self.split == "train":
            if self.img_size is not None:
                label = resize_nearest(label, self.img_size)
            rng = None if seed is None else np.random.default_rng(seed)
            image, label = self._training_view(image, label, sample.image, rng)
        return {"image": self._to_tensor(image), "label": torch.from_numpy(np.array(label)), "id": sample.id}

    def _training_view(
        self, image: np.ndarray, label: np.ndarray, path: Path, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The patch (when ``patch_size`` is set) and augmentation (with ``rng``) of image
        (H, W, C) and label int64 (H, W) at the training resolution: spatial steps on a window
        around the patch (:data:`~siteflow.datasets.patches.WINDOW_FACTOR`), then the patch is
        cut from the window's centre, then the intensity and colour steps on the patch."""
        augmentation = self.augmentation
        if self.patches is not None:
            require_patch_fits(self.patches.size, label.shape, path)
            moving = rng is not None and augmentation.has_spatial
            window = self.patches.window if moving else self.patches.size
            centre = self.patches.centre(label, rng)
            image, label = cut(image, centre, window, 0), cut(label, centre, window, augmentation.label_fill)
        if rng is None or not augmentation:
            return image, label
        image, codes = augmentation.move(image, augmentation.encode(label), rng)
        if self.patch_size is not None and codes.shape != self.patch_size:
            centre = centre_of(codes.shape)
            image, codes = cut(image, centre, self.patch_size, 0), cut(codes, centre, self.patch_size, augmentation.fill_code)
        return augmentation.recolour(image, rng), augmentation.decode(codes)

    def _decoded(self, row: int) -> Decoded:
        """The decoded sample of unique sample ``row``, through the decode cache."""
        sample = self.samples[row]
        files = [path for path in (sample.image, sample.mask, sample.fov) if path is not None]
        return self.cache.get(files, self._preprocessing(), lambda: self._decode(sample))

    def _preprocessing(self) -> dict[str, Any]:
        """What, besides its files, makes a sample's decoded arrays (the decode cache's key)."""
        return {
            "dataset": f"{type(self).__module__}.{type(self).__qualname__}",
            "img_size": self.img_size,
            "in_channels": self.in_channels,
            "mask_levels": self.mask_levels,
            "ignore_index": self.ignore_index,
        }

    def _decode(self, sample: SampleFiles) -> Decoded:
        """``sample``'s files decoded: the image (resized to ``img_size``), uint8 for 8-bit
        files, float32 in [0, 1] for 16-bit ones; the label at native size."""
        pixels = read_pixels(sample.image, self.in_channels)
        label = self._read_label(sample, (pixels.shape[1], pixels.shape[0]))
        return Decoded(unit_pixels(pixels, self.img_size), label)

    def preload(self) -> None:
        """Decodes every unique sample into the decode cache now (nothing for ``cache: none``):
        a loader calls it before its workers start, so that they share the arrays."""
        if self.cache.kind != "none":
            for row in range(self.num_samples):
                self._decoded(row)

    def label_sizes(self) -> set[tuple[int, int]]:
        """The (H, W) of the labels of this split's items (an evaluation loader batches items of
        one size only): the patch or ``img_size`` for a train split that has one, else the
        images' native sizes, read from their headers."""
        fixed = self.patch_size or self.img_size
        if self.split == "train" and fixed is not None:
            return {fixed}
        return {native_size(sample.image) for sample in self.samples}

    def _check_row(self, row: int) -> None:
        """The image's header and completeness (:func:`~siteflow.datasets.image_files.check_image`),
        then the mask (and FOV mask) as an item reads them: decoded, of the image's size, on
        the class levels; for the train split, that the patch fits in the image."""
        sample = self.samples[row]
        width, height = check_image(sample.image)
        self._read_label(sample, (width, height))
        if self.split == "train" and self.patch_size is not None:
            require_patch_fits(self.patch_size, self.img_size or (height, width), sample.image)

    def _read_label(self, sample: SampleFiles, image_size: tuple[int, int]) -> np.ndarray:
        """Class ids, int64 (H, W) at native size, of ``sample``'s mask; raises DataError naming
        the mask unless its size is the image's, ``image_size`` = (width, height)."""
        label = grey_to_class_ids(read_grey(sample.mask), self.mask_levels, sample.mask)
        require_image_size(label, sample.mask, "mask", sample.image, image_size)
        return label

    def _to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """float32 (C, H, W) of ``pixels`` (H, W, C), uint8 or float32 in [0, 1], scaled to
        out_range."""
        return scaled_tensor(pixels, self.out_range)
