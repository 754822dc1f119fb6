"""ISIC 2019 as FLamby's Fed-ISIC2019 benchmark cuts it: six sites by the image's source
data set, FLamby's train/test split."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np

from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.classification.base import ClassificationDataset, Release, Sample
from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.image_files import check_image, read_pixels

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata_FL.csv"
SPLIT = "train_test_folds.csv"
IMAGE_FOLDERS = ("ISIC_2019_Training_Input_preprocessed", "ISIC_2019_Training_Input")
ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
"""The eight diagnoses of the ISIC 2019 training set (the ground truth's ninth column, UNK,
has no training image), in FLamby's class order."""
CENTERS = ("BCN_nan", "HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "MSK4nan", "HAM_vienna_dias")
"""FLamby's six sites: the value of the metadata's ``dataset`` column of each centre 0 ... 5."""


def read_rows(path: Path, columns: tuple[str, ...]) -> tuple[list[dict[str, str]], int]:
    """The rows of the CSV at ``path`` (and the line number of the first); DataError naming
    the file when it is missing or lacks one of ``columns``."""
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist", paths=[path])
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: the columns {missing} are missing (columns: {reader.fieldnames})", paths=[path])
        return list(reader), 2


def one_hot_labels(path: Path) -> dict[str, int]:
    """Image -> class id, from the ground-truth CSV's one-hot columns (``MEL ... SCC``, and
    ``UNK`` when present). A row with no 1 or several, or whose 1 is UNK (no declared class),
    is a DataError naming the file, line and image."""
    rows, first_line = read_rows(path, ("image", *ISIC_CLASSES))
    columns = list(ISIC_CLASSES) + (["UNK"] if rows and "UNK" in rows[0] else [])
    labels = {}
    for line, row in enumerate(rows, first_line):
        try:
            values = np.array([float(row[c]) for c in columns])
        except (TypeError, ValueError):
            raise DataError(f"{path}, line {line} (image {row['image']}): a diagnosis cell is not a number", paths=[path]) from None
        ones = np.flatnonzero(values == 1.0)
        if len(ones) != 1 or not np.isin(values, (0.0, 1.0)).all():
            raise DataError(
                f"{path}, line {line} (image {row['image']}): one diagnosis column must be 1 and the others 0, "
                f"found {dict(zip(columns, values.tolist()))}",
                paths=[path],
            )
        if ones[0] >= len(ISIC_CLASSES):
            raise DataError(f"{path}, line {line} (image {row['image']}): class UNK is not one of the classes {list(ISIC_CLASSES)}", paths=[path])
        labels[row["image"]] = int(ones[0])
    return labels


@DATASETS.register("isic2019")
class Isic2019Dataset(ClassificationDataset):
    """One of FLamby's six Fed-ISIC2019 sites (``center`` 0 ... 5), from the ISIC 2019
    training release at ``root_path``::

        ISIC_2019_Training_GroundTruth.csv      image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC[, UNK] (one-hot)
        ISIC_2019_Training_Metadata_FL.csv      image, ..., dataset (the source: BCN_nan, HAM_vidir_molemax, ...)
        train_test_folds.csv                    FLamby's split: image, ..., fold2 (train_<center> | test_<center>)
        ISIC_2019_Training_Input_preprocessed/<image>.jpg   (FLamby's resized images; else ISIC_2019_Training_Input/)

    The site is the metadata's ``dataset`` value of the centre (:data:`CENTERS`, FLamby's
    order); the train/test part is FLamby's ``fold2`` prefix. Eight classes (:data:`ISIC_CLASSES`).
    Items: RGB images, see :class:`ClassificationDataset`.

    Args:
        center: FLamby's centre id, 0 ... 5.
        split_file: FLamby's split in ``root_path``.
        img_size: (H, W) every image is resized to (FLamby trains at 224 x 224); null keeps
            each image's own size.
        **kwargs: the options of :class:`ClassificationDataset` (a ``partition`` cuts the
            centre's images further).
    """

    def __init__(
        self,
        split: Split,
        *,
        center: Literal[0, 1, 2, 3, 4, 5] = 0,
        split_file: str = SPLIT,
        img_size: tuple[int, ...] | None = (224, 224),
        **kwargs: Any,
    ) -> None:
        self.class_names = ISIC_CLASSES
        self.center = center
        self.split_file = split_file
        super().__init__(split, img_size=img_size, **kwargs)

    @classmethod
    def _classes(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return ISIC_CLASSES

    def _release_samples(self, release: Release) -> list[Sample]:
        root = self.root_path
        labels = one_hot_labels(root / GROUND_TRUTH)
        metadata, _ = read_rows(root / METADATA, ("image", "dataset"))
        source = {row["image"]: row["dataset"] for row in metadata}
        folds, first_line = read_rows(root / self.split_file, ("image", "fold2"))
        folder = next((root / name for name in IMAGE_FOLDERS if (root / name).is_dir()), root / IMAGE_FOLDERS[0])
        samples = []
        for line, row in enumerate(folds, first_line):
            image = row["image"]
            if image not in labels or image not in source:
                where = GROUND_TRUTH if image not in labels else METADATA
                raise DataError(f"{root / self.split_file}, line {line}: image {image} is not in {where}", paths=[root / self.split_file])
            part = row["fold2"].split("_")[0]
            if part not in ("train", "test"):
                raise DataError(f"{root / self.split_file}, line {line}: fold2 {row['fold2']!r} is not train_<c> or test_<c>", paths=[root / self.split_file])
            if part == release and source[image] == CENTERS[self.center]:
                samples.append(Sample(image, labels[image], folder / f"{image}.jpg"))
        return sorted(samples, key=lambda s: s.id)

    def _pixels(self, sample: Sample) -> np.ndarray:
        if not sample.source.is_file():
            raise MissingFileError(f"image {sample.source} listed in {self.root_path / self.split_file} does not exist", paths=[sample.source])
        return read_pixels(sample.source, self.in_channels)

    def _check_row(self, row: int) -> None:
        sample = self.samples[row]
        if not sample.source.is_file():
            raise MissingFileError(f"image {sample.source} listed in {self.root_path / self.split_file} does not exist", paths=[sample.source])
        check_image(sample.source)
