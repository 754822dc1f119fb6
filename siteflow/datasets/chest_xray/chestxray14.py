"""NIH ChestX-ray14 as a multi-label site dataset."""

from __future__ import annotations

from pathlib import Path

from siteflow.datasets.chest_xray.base import MultiLabelDataset, Record, Release
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.tables import read_list, read_table
from siteflow.datasets.errors import DataError
from siteflow.core.registry import DATASETS

ENTRY_FILE = "Data_Entry_2017.csv"
LIST_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
# The 14 findings of ChestX-ray14, then "No Finding" (written when none of them is present).
CHESTXRAY14_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
    "No Finding",
)


def image_folders(root: Path) -> list[Path]:
    """The folders that hold ChestX-ray14's PNGs: ``<root>/images`` as one folder, or the
    release's ``<root>/images_001/images`` ... ``images_012/images`` parts, in name order."""
    return [root / "images"] + sorted(root.glob("images_*/images"))


def chestxray14_records(root: Path, release: Release, labels: tuple[str, ...]) -> list[Record]:
    """The images of ``train_val_list.txt`` (release "train") or ``test_list.txt`` ("test").

    ``Data_Entry_2017.csv`` gives each ``Image Index`` its ``Patient ID`` and ``Finding
    Labels``: findings joined by ``|`` (``Cardiomegaly|Effusion``), or ``No Finding``. A
    finding is 1 when it is listed and 0 otherwise: every label is known. Images are looked
    up in :func:`image_folders`; one found in none is expected in ``<root>/images``. Id: the
    image name without ``.png``. Records follow the list file's order.
    """
    table = read_table(root / ENTRY_FILE)
    entries = {
        name: (patient, findings)
        for name, patient, findings in zip(
            table.column("Image Index"), table.column("Patient ID"), table.column("Finding Labels")
        )
    }
    listing = root / LIST_FILES[release]
    names = read_list(listing)
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise DataError(f"{listing} lists images that {table.path} lacks: {unknown[:5]}", paths=[listing])
    folders = [folder for folder in image_folders(root) if folder.is_dir()]
    located = {path.name: path for folder in folders for path in folder.iterdir()}
    records = []
    for name in names:
        patient, findings = entries[name]
        present = {canonical_label(finding) for finding in findings.split("|")}
        records.append(
            Record(
                id=Path(name).stem,
                image=located.get(name, root / "images" / name),
                patient=patient,
                values=tuple(1.0 if label in present else 0.0 for label in labels),
                listed_in=table.path,
            )
        )
    return records


@DATASETS.register("chestxray14")
class ChestXray14Dataset(MultiLabelDataset):
    """NIH ChestX-ray14 at ``root_path`` (``Data_Entry_2017.csv``, ``train_val_list.txt``,
    ``test_list.txt``, and the PNGs in ``images/`` or ``images_*/images/``): train and val
    from the official train_val list, split by patient; test is the official test list.
    Findings: the 14 ChestX-ray14 findings and "no_finding", canonical names (``Effusion`` is
    ``"pleural_effusion"``). Labels are mined from reports as present / absent: none is
    uncertain or blank, so ``uncertain`` and ``blank`` change nothing here (they are accepted
    so that one config serves every site). Items: see :class:`MultiLabelDataset`."""

    all_labels = tuple(canonical_label(name) for name in CHESTXRAY14_FINDINGS)

    def _release_records(self, release: Release) -> list[Record]:
        return chestxray14_records(self.root_path, release, self.label_names)
