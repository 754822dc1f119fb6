"""CheXpert (CheXpert-v1.0 and CheXpert-v1.0-small) as a multi-label site dataset."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from siteflow.datasets.chest_xray.base import FrontalLateralDataset, Record, Release
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.tables import Table, read_table
from siteflow.datasets.errors import DataError
from siteflow.core.registry import DATASETS

# The 14 observations of CheXpert's train.csv / valid.csv, in the files' column order; MIMIC-CXR
# labels the same 14 with the same labeller.
CHEXPERT_FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
PATIENT = re.compile(r"patient\d+")


def chexpert_records(
    root: Path, release: Release, labels: tuple[str, ...], frontal_only: bool
) -> list[Record]:
    """The images of ``<root>/train.csv`` (release "train") or ``<root>/valid.csv`` ("test").

    ``root`` is the release folder (``CheXpert-v1.0-small``) that holds the CSVs. Column
    ``Path`` reads ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``: it
    starts at the folder above ``root``; its first part (the release folder's name) is replaced
    by ``root``, so a renamed release folder still works. The id is the rest of the path
    without its suffix (``train/patient00001/study1/view1_frontal``), the patient its
    ``patientNNNNN`` part. ``frontal_only`` keeps the rows whose ``Frontal/Lateral`` is
    ``Frontal``.
    """
    table = read_table(root / ("train.csv" if release == "train" else "valid.csv"))
    positions = table.label_columns(labels)
    views = table.column("Frontal/Lateral") if frontal_only else None
    records = []
    for row, path in enumerate(table.column("Path")):
        if views is not None and views[row] != "Frontal":
            continue
        relative = PurePosixPath(*PurePosixPath(path).parts[1:])
        records.append(
            Record(
                id=str(relative.with_suffix("")),
                image=root / relative,
                patient=_patient(path, table, row),
                values=table.label_values(row, positions),
                listed_in=table.path,
            )
        )
    return records


def _patient(path: str, table: Table, row: int) -> str:
    """The ``patientNNNNN`` part of a CheXpert path; DataError naming the file and row if none."""
    match = PATIENT.search(path)
    if match is None:
        raise DataError(
            f"{table.path} row {row + 2}: Path {path!r} names no patientNNNNN folder", paths=[table.path]
        )
    return match.group()


@DATASETS.register("chexpert")
class CheXpertDataset(FrontalLateralDataset):
    """CheXpert at ``root_path`` (the folder with ``train.csv`` and ``valid.csv``): train and
    val from ``train.csv``, split by patient; test is the official ``valid.csv``
    (labelled by radiologists). Findings: the 14 CheXpert observations,
    canonical names (``"no_finding"``, ..., ``"pleural_effusion"``, ``"support_devices"``).
    Labels 1.0 / 0.0 / -1.0 (uncertain) / blank (not mentioned) follow ``uncertain`` and
    ``blank``. ``frontal_only`` drops the lateral views. Items: see
    :class:`MultiLabelDataset`."""

    all_labels = tuple(canonical_label(name) for name in CHEXPERT_FINDINGS)
    read_records = staticmethod(chexpert_records)
