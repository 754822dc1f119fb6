"""MIMIC-CXR-JPG as a multi-label site dataset."""

from __future__ import annotations

import math
from pathlib import Path

from siteflow.datasets.chest_xray.base import FrontalLateralDataset, Record, Release
from siteflow.datasets.chest_xray.chexpert import CHEXPERT_FINDINGS
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.tables import find_table, read_table
from siteflow.datasets.errors import DataError
from siteflow.core.registry import DATASETS

LABELS_FILE = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
FRONTAL_VIEWS = ("PA", "AP")
# Official split names of each release part: "validate" is folded into the training part, from
# which val is carved by patient like on every other site.
RELEASE_SPLITS = {"train": ("train", "validate"), "test": ("test",)}


def mimic_image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``<root>/files/p<first 2 digits of subject>/p<subject>/s<study>/<dicom_id>.jpg``."""
    study = root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"
    return study / f"{dicom_id}.jpg"


def mimic_records(
    root: Path, release: Release, labels: tuple[str, ...], frontal_only: bool
) -> list[Record]:
    """The images of the official ``train`` + ``validate`` (release "train") or ``test`` split.

    Tables at ``root`` (plain or ``.csv.gz``): ``mimic-cxr-2.0.0-split.csv`` (dicom_id,
    study_id, subject_id, split), ``mimic-cxr-2.0.0-metadata.csv`` (dicom_id, ViewPosition,
    ...) and ``mimic-cxr-2.0.0-chexpert.csv`` (subject_id, study_id, one column per finding;
    labels belong to the study, so every image of a study shares them; a study without a row
    has blank labels). ``frontal_only`` keeps the PA and AP views. Id: the dicom_id; patient:
    the subject_id. Records are sorted by path.
    """
    splits = read_table(find_table(root, SPLIT_FILE))
    metadata = read_table(find_table(root, METADATA_FILE))
    table = read_table(find_table(root, LABELS_FILE))
    positions = table.label_columns(labels)
    studies = zip(table.column("subject_id"), table.column("study_id"))
    study_labels = {study: table.label_values(row, positions) for row, study in enumerate(studies)}
    views = dict(zip(metadata.column("dicom_id"), metadata.column("ViewPosition")))
    wanted = RELEASE_SPLITS[release]
    blank = (math.nan,) * len(labels)
    records = []
    columns = ("dicom_id", "study_id", "subject_id", "split")
    for dicom_id, study, subject, split in zip(*(splits.column(name) for name in columns)):
        if split not in wanted:
            continue
        if dicom_id not in views:
            raise DataError(
                f"{metadata.path} has no row for dicom_id {dicom_id} of {splits.path}", paths=[metadata.path]
            )
        if frontal_only and views[dicom_id] not in FRONTAL_VIEWS:
            continue
        records.append(
            Record(
                id=dicom_id,
                image=mimic_image_path(root, subject, study, dicom_id),
                patient=subject,
                values=study_labels.get((subject, study), blank),
                listed_in=splits.path,
            )
        )
    return sorted(records, key=lambda record: record.image)


@DATASETS.register("mimic_cxr")
class MimicCxrDataset(FrontalLateralDataset):
    """MIMIC-CXR-JPG at ``root_path`` (the folder with the ``mimic-cxr-2.0.0-*.csv[.gz]``
    tables and ``files/``): train and val from the official train and validate splits, split
    again by patient with ``val_fraction``; test is the official test split. Findings: the 14
    CheXpert observations (canonical names); labels 1 / 0 / -1 / blank per study follow
    ``uncertain`` and ``blank``. ``frontal_only`` keeps PA and AP views. Items: see
    :class:`MultiLabelDataset`."""

    # In the order of the columns of mimic-cxr-2.0.0-chexpert.csv (alphabetical).
    all_labels = tuple(sorted(canonical_label(name) for name in CHEXPERT_FINDINGS))
    read_records = staticmethod(mimic_records)
