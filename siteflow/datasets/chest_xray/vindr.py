"""VinDr-CXR as a multi-label site dataset."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from siteflow.datasets.base import Split
from siteflow.datasets.chest_xray.base import MultiLabelDataset, Record, Release
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.tables import read_table
from siteflow.core.registry import DATASETS

Aggregation = Literal["majority", "any"]
LABEL_FILES = {"train": "image_labels_train.csv", "test": "image_labels_test.csv"}
# The 22 local and 6 global labels of image_labels_train.csv (columns are found by name; this
# is the default label order); image_labels_test.csv spells "Other diseases" "Other disease".
VINDR_FINDINGS = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other diseases",
    "No finding",
)


def aggregate_readers(values: np.ndarray, rule: Aggregation) -> tuple[float, ...]:
    """One image's labels (L,) from its readers' raw values (R, L), blanks (NaN) skipped: a
    label is positive when more than half of the readers who gave it call it positive
    ("majority"; 2 of 3, a 1-1 tie is negative) or when any of them does ("any"); it stays
    blank when no reader gave it."""
    known = (~np.isnan(values)).sum(axis=0)
    positives = (values == 1.0).sum(axis=0)
    positive = positives * 2 > known if rule == "majority" else positives > 0
    return tuple(float(p) if k else np.nan for p, k in zip(positive, known))


def vindr_records(
    root: Path, release: Release, labels: tuple[str, ...], aggregate: Aggregation
) -> list[Record]:
    """The images of ``<root>/annotations/image_labels_train.csv`` (release "train") or
    ``image_labels_test.csv`` ("test"), images at ``<root>/{train,test}/<image_id>.dicom``.

    The train table has one row per image and radiologist (``rad_id``; three per image),
    merged by :func:`aggregate_readers`; the test table holds the consensus of five, one row
    per image (several rows would be merged alike). VinDr-CXR publishes no patient ids: each
    image is its own patient. Id: the image_id. Records are sorted by id.
    """
    table = read_table(root / "annotations" / LABEL_FILES[release])
    positions = table.label_columns(labels)
    readings: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for row, image_id in enumerate(table.column("image_id")):
        readings[image_id].append(table.label_values(row, positions))
    return [
        Record(
            id=image_id,
            image=root / release / f"{image_id}.dicom",
            patient=image_id,
            values=aggregate_readers(np.array(readings[image_id], dtype=np.float32), aggregate),
            listed_in=table.path,
        )
        for image_id in sorted(readings)
    ]


@DATASETS.register("vindr_cxr")
class VinDrCxrDataset(MultiLabelDataset):
    """VinDr-CXR at ``root_path`` (``annotations/image_labels_{train,test}.csv``,
    ``train/*.dicom``, ``test/*.dicom``): train and val from the training set (each image its
    own patient), test is the official test set. Findings: the 28 image-level labels,
    canonical names (``"pleural_effusion"``, ``"nodule_mass"``, ``"no_finding"``). The three
    radiologists of a training image are merged by ``aggregate``: "majority" (default: 2 of
    3 must call it) or "any" (one suffices). DICOM pixels are read as in
    :func:`~siteflow.datasets.chest_xray.images.read_dicom`. Items: see
    :class:`MultiLabelDataset`.

    Args:
        aggregate: How the readers of a training image are merged into one label:
            ``"majority"`` (default: positive when more than half of the readers who gave the
            label call it positive) or ``"any"`` (positive when one does).
    """

    all_labels = tuple(canonical_label(name) for name in VINDR_FINDINGS)

    def __init__(self, split: Split, *, aggregate: Aggregation = "majority", **kwargs: Any) -> None:
        if aggregate not in ("majority", "any"):
            raise ValueError(f"aggregate must be 'majority' or 'any', not {aggregate!r}")
        self.aggregate = aggregate
        super().__init__(split, **kwargs)

    def _release_records(self, release: Release) -> list[Record]:
        return vindr_records(self.root_path, release, self.label_names, self.aggregate)
