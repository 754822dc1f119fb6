"""The on-disk layouts of volume releases: the Medical Segmentation Decathlon's and a plain
``images/`` + ``labels/`` folder pair. Each lists a part's cases as :class:`VolumeCase`,
sorted by id; problems are DataErrors naming the file or folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.volumes.readers import is_volume, volume_stem


@dataclass(frozen=True)
class VolumeCase:
    """One case: its id, its image (a volume file, or a DICOM series folder) and its label volume."""

    id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class DecathlonInfo:
    """What a Decathlon ``dataset.json`` says: ``labels`` maps each label value of the label
    files to its class name (value 0 first: background), ``modalities`` one name per channel."""

    labels: dict[int, str]
    modalities: tuple[str, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names, by increasing label value (class id ``i`` is the ``i``-th value)."""
        return tuple(self.labels[value] for value in sorted(self.labels))


def read_decathlon_info(root: Path) -> DecathlonInfo:
    """``root/dataset.json`` of a Decathlon task, read.

    Raises MissingFileError when it is missing, DataError naming it when it is not JSON or its
    ``labels`` ({"0": "background", "1": ...}) or ``modality`` ({"0": "CT"}) are missing or
    malformed.
    """
    path = root / "dataset.json"
    if not path.is_file():
        raise MissingFileError(f"Decathlon layout: {path} does not exist", paths=[path])
    try:
        content = json.loads(path.read_text())
        labels = {int(value): str(name) for value, name in content["labels"].items()}
        modalities = tuple(str(content["modality"][key]) for key in sorted(content["modality"], key=int))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: expected JSON with 'labels' {{\"0\": \"background\", ...}} and 'modality' {{\"0\": \"CT\", ...}} "
            f"({type(error).__name__}: {error})",
            paths=[path],
        ) from None
    if 0 not in labels or len(labels) < 2 or not modalities:
        raise DataError(f"{path}: 'labels' needs value 0 (background) and at least one other, 'modality' one entry", paths=[path])
    return DecathlonInfo(labels, modalities)


def list_volumes(folder: Path) -> list[Path]:
    """The volumes of ``folder`` (files with a volume suffix, DICOM series folders), sorted by
    name, hidden files left out; MissingFileError naming the folder when it is missing or empty."""
    if not folder.is_dir():
        raise MissingFileError(f"volume folder {folder} does not exist", paths=[folder])
    volumes = sorted(path for path in folder.iterdir() if not path.name.startswith(".") and is_volume(path))
    if not volumes:
        raise MissingFileError(f"no volumes (.nii.gz, .nii, .mha, .mhd, .nrrd, DICOM folders) in {folder}", paths=[folder])
    return volumes


def paired_cases(images: Path, labels: Path) -> list[VolumeCase]:
    """A case per volume of ``images``, with the volume of ``labels`` of the same id.

    Raises MissingFileError naming the image whose label is missing.
    """
    by_id = {volume_stem(path): path for path in list_volumes(labels)} if labels.is_dir() else {}
    cases = []
    for image in list_volumes(images):
        case_id = volume_stem(image)
        if case_id not in by_id:
            raise MissingFileError(f"no label for volume {image}: no volume named {case_id!r} in {labels}", paths=[image])
        cases.append(VolumeCase(case_id, image, by_id[case_id]))
    return cases


def decathlon_cases(root: Path, part: str) -> list[VolumeCase]:
    """The cases of a Decathlon task folder: ``imagesTr``/``labelsTr`` for ``part`` "train",
    ``imagesTs``/``labelsTs`` for "test" (the released Decathlon has no test labels: a site's
    test split needs its labelled test cases in ``labelsTs``)."""
    suffix = "Tr" if part == "train" else "Ts"
    return paired_cases(root / f"images{suffix}", root / f"labels{suffix}")


def folder_pair_cases(root: Path, part: str) -> list[VolumeCase]:
    """The cases of a plain layout: ``<root>/<part>/images/`` and ``<root>/<part>/labels/``
    (``part``: "train" or "test"), volumes paired by name."""
    return paired_cases(root / part / "images", root / part / "labels")
