"""Writers of the four chest X-ray release layouts, for the synthetic sites: CheXpert,
ChestX-ray14, VinDr-CXR and MIMIC-CXR-JPG, with the files, column names and value
conventions of the published releases, so that the real loaders are what reads them.

Each writer gets a site's training and test cases, the findings the site annotates, and a
generator for its annotation noise; the findings it does not annotate are left blank where
the layout allows it (ChestX-ray14 cannot express "not annotated": unlisted means absent).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from siteflow.core.extras import optional_module
from siteflow.datasets.chest_xray.chestxray14 import CHESTXRAY14_FINDINGS, ENTRY_FILE, LIST_FILES
from siteflow.datasets.chest_xray.chexpert import CHEXPERT_FINDINGS
from siteflow.datasets.chest_xray.labels import canonical_label
from siteflow.datasets.chest_xray.mimic import LABELS_FILE, METADATA_FILE, SPLIT_FILE, mimic_image_path
from siteflow.datasets.chest_xray.synthetic.render import FINDINGS
from siteflow.datasets.chest_xray.vindr import LABEL_FILES, VINDR_FINDINGS

sitk = optional_module("SimpleITK", "volumes", "writing the synthetic chest X-rays (DICOM)")

LAYOUT_FOLDERS = {
    "chexpert": "CheXpert-v1.0-small",
    "chestxray14": "ChestX-ray14",
    "vindr_cxr": "VinDr-CXR",
    "mimic_cxr": "MIMIC-CXR-JPG",
}
# Report-mined labels (CheXpert, MIMIC-CXR training data): how often an annotated finding is
# written uncertain (-1) when present / absent, blank when absent; and how often a finding the
# site does not annotate is written uncertain rather than blank.
UNCERTAIN_IF_PRESENT, UNCERTAIN_IF_ABSENT, BLANK_IF_ABSENT, UNANNOTATED_UNCERTAIN = 0.1, 0.05, 0.1, 0.03
# VinDr-CXR training data: each radiologist misses a present finding, or calls an absent one.
READER_MISS, READER_FALSE_CALL = 0.15, 0.05
VINDR_READERS, VINDR_READERS_PER_IMAGE = 17, 3
DICOM_MAX = 4095  # 12-bit detector values
MIMIC_SUBJECT_STRIDE = 104729  # a prime: subject ids spread over p10 ... p19, all distinct


@dataclass(frozen=True)
class Case:
    """One drawn patient: whether each finding is present, and the radiograph float32 (H, W)
    in [0, 1] as the site acquired it."""

    truth: dict[str, bool]
    pixels: np.ndarray


Writer = Callable[[Path, Sequence[Case], Sequence[Case], Sequence[str], np.random.Generator], None]
CHESTXRAY14_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "",
]  # fmt: skip
MIMIC_METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip


def write_chexpert(
    root: Path,
    train: Sequence[Case],
    test: Sequence[Case],
    findings: Sequence[str],
    rng: np.random.Generator,
) -> None:
    """``<root>/train.csv`` and ``valid.csv`` (Path, Sex, Age, Frontal/Lateral, AP/PA, the 14
    observations as 1.0 / 0.0 / -1.0 / blank) and the JPEGs
    ``<root>/{train,valid}/patientNNNNN/studyN/view1_frontal.jpg``, two studies per patient.
    ``train.csv`` has report-mined noise; ``valid.csv`` is clean, as radiologists labelled it."""
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    parts = (("train", train, 1, "train.csv"), ("valid", test, 64541, "valid.csv"))
    for part, cases, first_patient, table in parts:
        rows = []
        for index, case in enumerate(cases):
            patient, study = first_patient + index // 2, index % 2 + 1
            relative = f"{part}/patient{patient:05d}/study{study}/view1_frontal.jpg"
            _save_picture(case.pixels, root / relative)
            noisy = part == "train"
            cells = [_report_cell(case, name, findings, rng, noisy) for name in CHEXPERT_FINDINGS]
            sex, age = rng.choice(["Female", "Male"]), int(rng.integers(20, 90))
            rows.append([f"{root.name}/{relative}", sex, age, "Frontal", rng.choice(["AP", "PA"]), *cells])
        _write_csv(root / table, header, rows)


def write_chestxray14(
    root: Path,
    train: Sequence[Case],
    test: Sequence[Case],
    findings: Sequence[str],
    rng: np.random.Generator,
) -> None:
    """``<root>/Data_Entry_2017.csv`` (with the release's header, its bracketed size and
    spacing columns and trailing comma), ``train_val_list.txt``, ``test_list.txt`` and the
    PNGs ``NNNNNNNN_NNN.png`` in ``images_001/images`` (first half) and ``images_002/images``;
    two images per patient, test patients after the training ones."""
    spellings = sorted(_spelling(name, CHESTXRAY14_FINDINGS) for name in findings)
    first_test_patient = (len(train) + 1) // 2 + 1
    rows, lists = [], {"train": [], "test": []}
    for release, cases, first_patient in (("train", train, 1), ("test", test, first_test_patient)):
        for index, case in enumerate(cases):
            patient = first_patient + index // 2
            name = f"{patient:08d}_{index % 2:03d}.png"
            folder = "images_001" if len(rows) < (len(train) + len(test)) // 2 else "images_002"
            _save_picture(case.pixels, root / folder / "images" / name)
            present = "|".join(s for s in spellings if case.truth[canonical_label(s)]) or "No Finding"
            age, sex, view = int(rng.integers(20, 90)), rng.choice(["F", "M"]), rng.choice(["AP", "PA"])
            size = case.pixels.shape[0]
            rows.append([name, present, index % 2, patient, age, sex, view, size, size, "0.143", "0.143", ""])
            lists[release].append(name)
    _write_csv(root / ENTRY_FILE, CHESTXRAY14_HEADER, rows)
    for release, names in lists.items():
        (root / LIST_FILES[release]).write_text("".join(f"{name}\n" for name in names))


def write_vindr(
    root: Path,
    train: Sequence[Case],
    test: Sequence[Case],
    findings: Sequence[str],
    rng: np.random.Generator,
) -> None:
    """``<root>/annotations/image_labels_train.csv`` (image_id, rad_id, the 28 labels as 0 / 1;
    three of 17 radiologists per image, each with misses and false calls),
    ``image_labels_test.csv`` (image_id and the consensus labels, "Other disease" spelled as
    in the release) and the 12-bit DICOMs ``<root>/{train,test}/<image_id>.dicom``, every
    third stored as MONOCHROME1 (inverted values)."""
    test_columns = ["Other disease" if name == "Other diseases" else name for name in VINDR_FINDINGS]
    headers = {"train": ["image_id", "rad_id", *VINDR_FINDINGS], "test": ["image_id", *test_columns]}
    for release, cases in (("train", train), ("test", test)):
        rows = []
        for index, case in enumerate(cases):
            image_id = rng.bytes(16).hex()
            path = root / release / f"{image_id}.dicom"
            _write_dicom(case.pixels, path, image_id, monochrome1=index % 3 == 2)
            if release == "test":
                rows.append([image_id, *_vindr_cells(case.truth, findings)])
                continue
            readers = np.sort(rng.choice(VINDR_READERS, VINDR_READERS_PER_IMAGE, replace=False)) + 1
            for reader in readers:
                called = {name: _reader_calls(case.truth[name], rng) for name in findings}
                rows.append([image_id, f"R{reader}", *_vindr_cells(called, findings)])
        _write_csv(root / "annotations" / LABEL_FILES[release], headers[release], rows)


def write_mimic(
    root: Path,
    train: Sequence[Case],
    test: Sequence[Case],
    findings: Sequence[str],
    rng: np.random.Generator,
) -> None:
    """``<root>/mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz`` and the JPEGs
    ``<root>/files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``: one frontal image per study, two
    studies per subject; every 20th training subject is in the official validate split."""
    label_columns = sorted(CHEXPERT_FINDINGS)
    labels, metadata, splits = [], [], []
    first_test_subject = (len(train) + 1) // 2
    for release, cases, first_subject in (("train", train, 0), ("test", test, first_test_subject)):
        for index, case in enumerate(cases):
            serial = first_subject + index // 2
            subject = str(10_000_000 + serial * MIMIC_SUBJECT_STRIDE % 10_000_000)
            study = str(50_000_000 + len(labels))
            dicom_id = "-".join(rng.bytes(4).hex() for _ in range(5))
            _save_picture(case.pixels, mimic_image_path(root, subject, study, dicom_id))
            cells = [_report_cell(case, name, findings, rng, noisy=True) for name in label_columns]
            labels.append([subject, study, *cells])
            view = rng.choice(["PA", "AP"])
            meaning = "postero-anterior" if view == "PA" else "antero-posterior"
            size = case.pixels.shape[0]
            metadata.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, size, size, "21800101",
                             "120000.000", "CHEST (PA AND LAT)", meaning, "Erect"])  # fmt: skip
            split = "test" if release == "test" else ("validate" if serial % 20 == 19 else "train")
            splits.append([dicom_id, study, subject, split])
    _write_csv(root / f"{LABELS_FILE}.gz", ["subject_id", "study_id", *label_columns], sorted(labels))
    by_study = sorted(metadata, key=lambda row: (row[1], row[2]))
    _write_csv(root / f"{METADATA_FILE}.gz", MIMIC_METADATA_HEADER, by_study)
    by_subject = sorted(splits, key=lambda row: (row[2], row[1]))
    _write_csv(root / f"{SPLIT_FILE}.gz", ["dicom_id", "study_id", "subject_id", "split"], by_subject)


WRITERS: dict[str, Writer] = {
    "chexpert": write_chexpert,
    "chestxray14": write_chestxray14,
    "vindr_cxr": write_vindr,
    "mimic_cxr": write_mimic,
}


def _spelling(finding: str, names: Sequence[str]) -> str:
    """The release's spelling (one of ``names``) of the canonical ``finding``."""
    return next(name for name in names if canonical_label(name) == finding)


def _report_cell(
    case: Case, name: str, findings: Sequence[str], rng: np.random.Generator, noisy: bool
) -> str:
    """The cell of column ``name`` for a report-mined (``noisy``) or radiologist-checked label:
    "No Finding" is 1.0 when no annotated finding is present, else blank; an annotated finding
    1.0 / 0.0, with uncertain and blank cells when noisy; any other column blank, or now and
    then uncertain when noisy."""
    finding = canonical_label(name)
    draw = rng.random()
    if finding == "no_finding":
        return "" if any(case.truth[f] for f in findings) else "1.0"
    if finding not in findings:
        return "-1.0" if noisy and draw < UNANNOTATED_UNCERTAIN else ""
    if case.truth[finding]:
        return "-1.0" if noisy and draw < UNCERTAIN_IF_PRESENT else "1.0"
    if noisy and draw < UNCERTAIN_IF_ABSENT:
        return "-1.0"
    return "" if noisy and draw < UNCERTAIN_IF_ABSENT + BLANK_IF_ABSENT else "0.0"


def _reader_calls(present: bool, rng: np.random.Generator) -> bool:
    """Whether one VinDr-CXR radiologist calls a finding that is ``present`` or not."""
    return bool(rng.random() >= READER_MISS) if present else bool(rng.random() < READER_FALSE_CALL)


def _vindr_cells(called: dict[str, bool], findings: Sequence[str]) -> list[str]:
    """VinDr-CXR cells of one reading: the annotated findings 1 / 0 as ``called``, "No
    finding" 1 when none is called, synthetic findings the site does not annotate blank, the
    release's other labels (never drawn) 0."""
    cells = []
    for name in VINDR_FINDINGS:
        finding = canonical_label(name)
        if finding in findings:
            cells.append("1" if called[finding] else "0")
        elif finding == "no_finding":
            cells.append("0" if any(called.values()) else "1")
        else:
            cells.append("" if finding in FINDINGS else "0")
    return cells


def _save_picture(pixels: np.ndarray, path: Path) -> None:
    """8-bit grey JPEG (quality 95) or PNG of ``pixels`` float32 (H, W) in [0, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    grey.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def _write_dicom(pixels: np.ndarray, path: Path, image_id: str, monochrome1: bool) -> None:
    """A 12-bit grey DICOM of ``pixels`` float32 (H, W) in [0, 1], with UIDs derived from
    ``image_id`` and fixed dates (so the bytes repeat). SimpleITK always writes MONOCHROME2;
    a MONOCHROME1 file stores the inverted values and has its PhotometricInterpretation value
    rewritten in place (same length, so the file stays valid)."""
    stored = np.round(pixels * DICOM_MAX).astype(np.uint16)
    image = sitk.GetImageFromArray(DICOM_MAX - stored if monochrome1 else stored)
    tags = {
        "0008|0060": "DX",
        "0008|0012": "20200101",
        "0008|0013": "000000",
        "0008|0020": "20200101",
        "0008|0030": "000000",
        "0008|0018": _uid(image_id, "instance"),
        "0020|000d": _uid(image_id, "study"),
        "0020|000e": _uid(image_id, "series"),
    }
    for tag, value in tags.items():
        image.SetMetaData(tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)
    if monochrome1:
        written = path.read_bytes()
        if written.count(b"MONOCHROME2 ") != 1:
            raise RuntimeError(f"cannot mark {path} as MONOCHROME1: not one PhotometricInterpretation")
        path.write_bytes(written.replace(b"MONOCHROME2 ", b"MONOCHROME1 "))


def _uid(image_id: str, kind: str) -> str:
    """A DICOM UID under the UUID-derived root 2.25, from a digest of ``image_id`` and ``kind``."""
    return f"2.25.{int(hashlib.sha256(f'{image_id}/{kind}'.encode()).hexdigest()[:30], 16)}"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A CSV with ``\\n`` line ends, gzip-compressed (with a fixed timestamp) if ``path``
    ends in ``.gz``."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = text.getvalue().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
