"""A folder per class: ``<root>/<class>/*.png``, the layout of many classification releases."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from siteflow.core.errors import OptionError
from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.classification.base import ClassificationDataset, Release, Sample
from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.files import IMAGE_SUFFIXES
from siteflow.datasets.image_files import check_image, read_pixels


def check_classes(classes: list[str] | None) -> tuple[str, ...]:
    """The declared class names: at least two, distinct; OptionError at ``classes``."""
    if classes is None or len(classes) < 2:
        raise OptionError("classes", f"list the class folders' names, in class-id order (at least two), not {classes!r}")
    if len(set(classes)) != len(classes):
        raise OptionError("classes", f"names a class twice: {classes}")
    return tuple(str(name) for name in classes)


def read_metadata(path: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Image id -> its (column, value) pairs, from a CSV whose column ``image`` holds the ids
    (``<class>/<file stem>``, or the file stem alone when stems are unique); DataError naming
    the file when it lacks that column."""
    if not path.is_file():
        raise MissingFileError(f"metadata file {path} does not exist", paths=[path])
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "image" not in reader.fieldnames:
            raise DataError(f"{path}: the metadata file needs a column 'image' (columns: {reader.fieldnames})", paths=[path])
        return {row["image"]: tuple((k, v) for k, v in row.items() if k != "image") for row in reader}


@DATASETS.register("class_folders")
class ClassFoldersDataset(ClassificationDataset):
    """A release with one folder of images per class::

        <root_path>/train/<class>/<name>.png     (any of .png .jpg .jpeg .tif .bmp .ppm .gif)
        <root_path>/test/<class>/<name>.png

    or, with ``test_fraction``, one set ``<root_path>/<class>/<name>.png`` of which that
    fraction (seeded by ``split_seed``) is the test part. ``classes`` names the class folders
    in class-id order; a class may have no folder (a site without it), a folder that is not a
    declared class is a DataError naming it. Image ids: ``<class>/<name>``.

    ``metadata`` names a CSV in ``root_path`` with a column ``image`` (the ids, or the file
    names without suffix when they are unique) and any others, by which a partition
    ``scheme: column`` cuts the release into sites.

    Items: see :class:`ClassificationDataset`.

    Args:
        classes: the class folders' names, in class-id order.
        test_fraction: None for ``train/`` and ``test/`` folders; else the share of one set
            that is the test part, in (0, 1).
        metadata: a CSV file in ``root_path`` with per-image metadata, or None.
        **kwargs: the options of :class:`ClassificationDataset`.
    """

    def __init__(
        self,
        split: Split,
        *,
        classes: list[str] | None = None,
        test_fraction: float | None = None,
        metadata: str | None = None,
        **kwargs: Any,
    ) -> None:
        if test_fraction is not None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1) or null, not {test_fraction!r}")
        self.class_names = check_classes(classes)
        self.test_fraction = test_fraction
        self.metadata_file = metadata
        super().__init__(split, **kwargs)

    @classmethod
    def _classes(cls, options: dict[str, Any]) -> tuple[str, ...]:
        if options["test_fraction"] is not None and not 0.0 < options["test_fraction"] < 1.0:
            raise OptionError("test_fraction", f"must be in (0, 1) or null, not {options['test_fraction']!r}")
        return check_classes(options["classes"])

    def _release_samples(self, release: Release) -> list[Sample]:
        if self.test_fraction is None:
            samples = self._folder_samples(self.root_path / release)
        else:
            everything = self._folder_samples(self.root_path)
            permutation = np.random.default_rng([self.split_seed, 2]).permutation(len(everything))
            test = set(permutation[: max(1, round(self.test_fraction * len(everything)))].tolist())
            samples = [s for i, s in enumerate(everything) if (i in test) == (release == "test")]
        if self.metadata_file is None:
            return samples
        table = read_metadata(self.root_path / self.metadata_file)
        return [Sample(s.id, s.label, s.source, metadata=table.get(s.id, table.get(s.source.stem, ()))) for s in samples]

    def _folder_samples(self, folder: Path) -> list[Sample]:
        """The images of the class folders in ``folder``, sorted by id."""
        if not folder.is_dir():
            raise MissingFileError(f"folder {folder} does not exist (expected a folder per class in it)", paths=[folder])
        stray = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in self.class_names and p.name not in ("train", "test"))
        if stray:
            raise DataError(
                f"{folder}: the folders {stray} are not declared classes {list(self.class_names)}: add them to classes, or move them",
                paths=[folder / name for name in stray],
            )
        samples = []
        for label, name in enumerate(self.class_names):
            directory = folder / name
            if not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    samples.append(Sample(f"{name}/{path.stem}", label, path))
        return samples

    def _pixels(self, sample: Sample) -> np.ndarray:
        pixels = read_pixels(sample.source, self.in_channels)
        return pixels if pixels.dtype == np.uint8 else (pixels / 65535.0).astype(np.float32)

    def _check_row(self, row: int) -> None:
        check_image(self.samples[row].source)
