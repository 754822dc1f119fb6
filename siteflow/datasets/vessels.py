"""Retinal vessel segmentation on the DRIVE, STARE and CHASE_DB1 release layouts.

The layout readers are plain functions (root folder -> samples) so that the synthetic vessel
sites (:mod:`siteflow.datasets.synthetic`) read their files through the very same code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from siteflow.datasets.base import SegmentationDataset, Split
from siteflow.datasets.files import (
    SampleFiles,
    grey_to_class_ids,
    list_images,
    require_image_size,
    require_partner,
)
from siteflow.datasets.image_files import read_grey
from siteflow.datasets.spec import DataSpec
from siteflow.datasets.splits import fixed_test_split
from siteflow.core.registry import DATASETS

Release = Literal["train", "test"]
FOV_LEVELS = (0, 255)  # grey levels of a FOV mask: outside, inside


def drive_samples(root: Path, release: Release, with_fov: bool) -> list[SampleFiles]:
    """DRIVE: ``<root>/{training,test}/images/NN_{training,test}.tif`` with the annotation
    ``1st_manual/NN_manual1.gif`` and, when ``with_fov``, the FOV mask
    ``mask/NN_{training,test}_mask.gif``."""
    folder = root / ("training" if release == "train" else "test")
    samples = []
    for image in list_images(folder / "images", "*.tif"):
        number = image.stem.split("_")[0]
        mask = folder / "1st_manual" / f"{number}_manual1.gif"
        fov = folder / "mask" / f"{image.stem}_mask.gif"
        samples.append(
            SampleFiles(
                image.stem,
                image,
                require_partner(mask, image, "manual annotation"),
                require_partner(fov, image, "FOV mask") if with_fov else None,
            )
        )
    return samples


def stare_samples(
    root: Path, release: Release, test_ids: list[str] | None, num_test: int
) -> list[SampleFiles]:
    """STARE: ``<root>/stare-images/imNNNN.ppm`` with Hoover's annotation
    ``<root>/labels-ah/imNNNN.ah.ppm`` (uncompress the release's ``.gz`` files first)."""
    samples = [
        SampleFiles(
            image.stem,
            image,
            require_partner(root / "labels-ah" / f"{image.stem}.ah.ppm", image, "annotation"),
        )
        for image in list_images(root / "stare-images", "*.ppm")
    ]
    return _fixed_split(samples, release, test_ids, num_test, root)


def chase_samples(
    root: Path, release: Release, test_ids: list[str] | None, num_test: int
) -> list[SampleFiles]:
    """CHASE_DB1: ``<root>/Image_NN{L,R}.jpg`` with the first observer's annotation
    ``<root>/Image_NN{L,R}_1stHO.png`` (the second observer's ``_2ndHO`` is not used)."""
    samples = [
        SampleFiles(
            image.stem,
            image,
            require_partner(root / f"{image.stem}_1stHO.png", image, "1stHO annotation"),
        )
        for image in list_images(root, "Image_*.jpg")
    ]
    return _fixed_split(samples, release, test_ids, num_test, root)


def _fixed_split(
    samples: list[SampleFiles],
    release: Release,
    test_ids: list[str] | None,
    num_test: int,
    root: Path,
) -> list[SampleFiles]:
    keep = set(fixed_test_split([s.id for s in samples], release, test_ids, num_test, str(root)))
    return [sample for sample in samples if sample.id in keep]


class VesselDataset(SegmentationDataset):
    """Binary vessel segmentation of RGB fundus images: masks 0 background, 255 vessel (grey,
    GIF, PPM or PNG), classes 0 background and 1 vessel. Items: image float32 (3, H, W),
    label int64 (H, W) in {0, 1}, or ``fov_ignore_index`` outside the field of view where
    the release ships FOV masks (DRIVE only; on the others nothing is ignored). A FOV mask
    is grey, 0 outside and 255 inside (:data:`FOV_LEVELS`, decoded like a mask: to the nearest
    level, with the same tolerance), of the image's size.

    Args:
        fov_ignore_index: Label value given to the pixels outside the field of view, so that
            losses and metrics skip them; it must not be a class id (0 or 1), e.g. 255. None
            (the default) keeps them as background and does not read the FOV masks.
    """

    class_names = ("background", "vessel")
    mask_levels = (0, 255)
    in_channels = 3

    def __init__(self, split: Split, *, fov_ignore_index: int | None = None, **kwargs: Any) -> None:
        self.fov_ignore_index = self._checked_ignore_index(fov_ignore_index)
        super().__init__(split, **kwargs)

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> DataSpec:
        ignore_index = cls._checked_ignore_index(options["fov_ignore_index"])
        return dataclasses.replace(super()._spec(options), ignore_index=ignore_index)

    @classmethod
    def _checked_ignore_index(cls, value: int | None) -> int | None:
        """A ``fov_ignore_index`` option; ValueError naming it when it is a class id (its pixels
        would be counted as that class, and every pixel of that class ignored)."""
        if value is not None and 0 <= value < cls.num_classes:
            raise ValueError(
                f"fov_ignore_index {value} is the id of class {cls.class_names[value]!r}; "
                f"choose a value outside 0..{cls.num_classes - 1}, e.g. 255"
            )
        return value

    @property
    def ignore_index(self) -> int | None:
        return self.fov_ignore_index

    def _read_label(self, sample: SampleFiles, image_size: tuple[int, int]) -> np.ndarray:
        """Class ids, int64 (H, W), with ``fov_ignore_index`` outside the sample's FOV mask
        (which must have the image's size too)."""
        label = super()._read_label(sample, image_size)
        if self.fov_ignore_index is not None and sample.fov is not None:
            inside = grey_to_class_ids(read_grey(sample.fov, "FOV mask"), FOV_LEVELS, sample.fov) == 1
            require_image_size(inside, sample.fov, "FOV mask", sample.image, image_size)
            label[~inside] = self.fov_ignore_index
        return label


@DATASETS.register("drive")
class DriveDataset(VesselDataset):
    """DRIVE (40 images, 565x584): release ``training`` (21-40) and ``test`` (01-20) folders,
    val carved from ``training``. ``fov_ignore_index``: label value given to the pixels
    outside the FOV masks (``mask/*.gif``), None to keep them as background."""

    def _release_samples(self, release: Release) -> list[SampleFiles]:
        return drive_samples(self.root_path, release, self.fov_ignore_index is not None)


class UnsplitVesselDataset(VesselDataset):
    """A vessel release without an official split, read by ``read_release``. The test split
    is ``test_ids`` when given, else the last ``num_test`` ids in sorted order (None: the
    class's ``default_num_test``); val is carved from the rest. These releases have no FOV
    masks: ``fov_ignore_index`` ignores nothing (it is accepted so that one vessel config
    serves every site).

    Args:
        test_ids: Sample ids (image file stems, e.g. ``im0162``) that form the test split,
            the rest being train and val; None (the default) takes the last ``num_test`` ids.
        num_test: How many of the last ids, in sorted order, form the test split when
            ``test_ids`` is None; must leave at least one for training. None: the dataset's
            ``default_num_test`` (10 for STARE, 8 for CHASE_DB1).
    """

    default_num_test: ClassVar[int]
    read_release: ClassVar[Callable[[Path, Release, list[str] | None, int], list[SampleFiles]]]

    def __init__(
        self,
        split: Split,
        *,
        test_ids: list[str] | None = None,
        num_test: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.test_ids = test_ids
        self.num_test = self.default_num_test if num_test is None else num_test
        super().__init__(split, **kwargs)

    def _release_samples(self, release: Release) -> list[SampleFiles]:
        return self.read_release(self.root_path, release, self.test_ids, self.num_test)


@DATASETS.register("stare")
class StareDataset(UnsplitVesselDataset):
    """STARE (20 annotated images, 700x605; see :func:`stare_samples`). Default test split:
    the last 10 ids, im0162 ... im0324 (training: im0001 ... im0139)."""

    default_num_test = 10
    read_release = staticmethod(stare_samples)


@DATASETS.register("chase_db1")
class ChaseDataset(UnsplitVesselDataset):
    """CHASE_DB1 (28 images, 999x960; see :func:`chase_samples`). Default test split, the
    common practice: the last 8 ids, Image_11L ... Image_14R (training: the first 20)."""

    default_num_test = 8
    read_release = staticmethod(chase_samples)
