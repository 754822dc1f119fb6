"""The on-disk layouts of volume releases: the Medical Segmentation Decathlon's (and nnU-Net
v2's raw layout, its successor) and a plain ``images/`` + ``labels/`` folder pair. Each lists a
part's cases as :class:`VolumeCase`, sorted by id; problems are DataErrors naming the file or
folder. A case's channels are one file (3D, 4D with the channels last, or a vector image), or
one file per channel as nnU-Net names them: ``<id>_0000.nii.gz``, ``<id>_0001.nii.gz``, ...
beside the label ``<id>.nii.gz``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from siteflow.datasets.errors import DataError, MissingFileError
from siteflow.datasets.volumes.readers import is_volume, volume_stem

CHANNEL_FILE = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")
"""The stem of one channel's file of a case, as nnU-Net names them: ``<id>_<4-digit channel>``."""
NO_TEST_LABELS = "set the dataset's test_fraction to carve a labelled test split from the training cases instead"
"""What to do when a release has no labelled test part (the Decathlon labels only imagesTr)."""


@dataclass(frozen=True)
class VolumeCase:
    """One case: its id, its image files (one volume file or DICOM series folder holding every
    channel, or one file per channel in channel order) and its label volume."""

    id: str
    images: tuple[Path, ...]
    label: Path

    @property
    def image(self) -> Path:
        """The first image file, whose grid the other channels and the label must share."""
        return self.images[0]


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
    """``root/dataset.json`` of a Decathlon task, read; nnU-Net v2's (``labels`` {"background":
    0, ...}, ``channel_names`` instead of ``modality``) too.

    Raises MissingFileError when it is missing, DataError naming it when it is not JSON or its
    ``labels`` ({"0": "background", "1": ...}) or ``modality`` ({"0": "CT"}) are missing or
    malformed.
    """
    path = root / "dataset.json"
    if not path.is_file():
        raise MissingFileError(f"Decathlon layout: {path} does not exist", paths=[path])
    try:
        content = json.loads(path.read_text())
        if all(isinstance(value, int) for value in content["labels"].values()):  # nnU-Net v2: {"background": 0, ...}
            labels = {value: str(name) for name, value in content["labels"].items()}
        else:
            labels = {int(value): str(name) for value, name in content["labels"].items()}
        channels = content["modality"] if "modality" in content else content["channel_names"]  # nnU-Net v2
        modalities = tuple(str(channels[key]) for key in sorted(channels, key=int))
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
    """The cases of ``images``: each volume, or each set of channel files ``<id>_0000``,
    ``<id>_0001``, ... (nnU-Net's naming), with the volume of ``labels`` of its id.

    Raises MissingFileError naming an image that no label matches, DataError naming the files
    of a case whose channels are not numbered 0, 1, ... without a gap.
    """
    by_id = {volume_stem(path): path for path in list_volumes(labels)} if labels.is_dir() else {}
    channels: dict[str, list[tuple[int, Path]]] = {}
    for image in list_volumes(images):
        stem = volume_stem(image)
        match = CHANNEL_FILE.match(stem)
        if stem in by_id:
            channels.setdefault(stem, []).append((0, image))
        elif match and match["id"] in by_id:
            channels.setdefault(match["id"], []).append((int(match["channel"]), image))
        else:
            also = f" (or {match['id']!r}, for nnU-Net channel files)" if match else ""
            raise MissingFileError(f"no label for volume {image}: no volume named {stem!r}{also} in {labels}", paths=[image])
    cases = []
    for case_id in sorted(channels):
        numbered = sorted(channels[case_id])
        files = tuple(path for _, path in numbered)
        if [number for number, _ in numbered] != list(range(len(numbered))):
            raise DataError(
                f"case {case_id!r}: its image files {[path.name for path in files]} must be one volume, or one "
                f"file per channel numbered {case_id}_0000, {case_id}_0001, ... without a gap",
                paths=files,
            )
        cases.append(VolumeCase(case_id, files, by_id[case_id]))
    return cases


def decathlon_cases(root: Path, part: str) -> list[VolumeCase]:
    """The cases of a Decathlon task folder: ``imagesTr``/``labelsTr`` for ``part`` "train",
    ``imagesTs``/``labelsTs`` for "test" (the released Decathlon has no test labels:
    MissingFileError saying what to do when ``labelsTs`` is missing)."""
    suffix = "Tr" if part == "train" else "Ts"
    labels = root / f"labels{suffix}"
    if part == "test" and not labels.is_dir():
        raise MissingFileError(f"Decathlon layout: {labels} does not exist (no labelled test cases): {NO_TEST_LABELS}", paths=[labels])
    return paired_cases(root / f"images{suffix}", labels)


def folder_pair_cases(root: Path, part: str) -> list[VolumeCase]:
    """The cases of a plain layout: ``<root>/<part>/images/`` and ``<root>/<part>/labels/``
    (``part``: "train" or "test"), volumes paired by name (MissingFileError saying what to do
    when there is no ``test/`` folder)."""
    if part == "test" and not (root / part).is_dir():
        raise MissingFileError(f"volume folders: {root / part} does not exist (no labelled test cases): {NO_TEST_LABELS}", paths=[root / part])
    return paired_cases(root / part / "images", root / part / "labels")
