"""The registered volume datasets: ``decathlon`` (a Medical Segmentation Decathlon task
folder) and ``volume_folders`` (a plain ``images/`` + ``labels/`` folder pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from siteflow.core.errors import OptionError
from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.volumes.dataset import VolumeDataset
from siteflow.datasets.volumes.layouts import (
    VolumeCase,
    decathlon_cases,
    folder_pair_cases,
    read_decathlon_info,
)


@DATASETS.register("decathlon")
class DecathlonDataset(VolumeDataset):
    """One site's split of a Medical Segmentation Decathlon task folder::

        <root_path>/dataset.json           "labels": {"0": "background", "1": ...}, "modality": {"0": "CT"}
        <root_path>/imagesTr/<id>.nii.gz   3D, or 4D with the channels (modalities) last
        <root_path>/labelsTr/<id>.nii.gz   label values as in dataset.json
        <root_path>/imagesTs/<id>.nii.gz   the test split, labelled in labelsTs/ (the released
                                           Decathlon has none: set test_fraction instead)

    nnU-Net v2's raw layout reads too: one file per channel (``<id>_0000.nii.gz``,
    ``<id>_0001.nii.gz``, ... beside the label ``<id>.nii.gz``) and its ``dataset.json``
    (``"labels": {"background": 0, ...}``, ``"channel_names"``). Classes, channels and modality
    come from ``dataset.json`` (read by :meth:`describe` too: a missing one is refused at
    ``root_path``); the label values need not be consecutive. Items and options (a test split
    carved from the training cases, the release cut into sites): see :class:`VolumeDataset`.
    """

    @classmethod
    def _described_contents(cls, options: dict[str, Any]) -> tuple[tuple[str, ...], int, bool]:
        description = Path(options["root_path"]) / "dataset.json"
        if not description.is_file():
            raise OptionError("root_path", f"{str(description)!r} does not exist: a Decathlon task's dataset.json names its classes and channels")
        info = read_decathlon_info(description.parent)
        return info.class_names, len(info.modalities), any(m.upper() == "CT" for m in info.modalities)

    def _contents(self) -> tuple[tuple[str, ...], int, bool]:
        self.info = read_decathlon_info(self.root_path)
        return self._described_contents({"root_path": self.root_path})

    def _label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.info.labels))

    def _release_cases(self, release: Literal["train", "test"]) -> list[VolumeCase]:
        return decathlon_cases(self.root_path, release)


@DATASETS.register("volume_folders")
class VolumeFolderDataset(VolumeDataset):
    """One site's split of a plain volume release::

        <root_path>/{train,test}/images/<id>.{nii.gz,nii,mha,mhd,nrrd}   or a DICOM series folder <id>/
        <root_path>/{train,test}/labels/<id>.<any volume suffix>          class ids 0 .. K-1

    Items and the other options: see :class:`VolumeDataset`.

    Args:
        class_names: one name per class, background first (label value ``i`` is class ``i``).
        in_channels: channels of every image.
        modality: ``CT`` or ``MRI``: chooses the ``auto`` normalisation.
    """

    def __init__(
        self,
        split: Split,
        *,
        class_names: tuple[str, ...] = ("background", "foreground"),
        in_channels: int = 1,
        modality: Literal["CT", "MRI"] = "MRI",
        **kwargs: Any,
    ) -> None:
        self.contents = self._described_contents({"class_names": class_names, "in_channels": in_channels, "modality": modality})
        super().__init__(split, **kwargs)

    @classmethod
    def _described_contents(cls, options: dict[str, Any]) -> tuple[tuple[str, ...], int, bool]:
        names, channels = tuple(options["class_names"]), options["in_channels"]
        if len(names) < 2:
            raise ValueError(f"class_names needs background and at least one class, not {list(names)!r}")
        if channels < 1:
            raise ValueError(f"in_channels must be at least 1, not {channels!r}")
        return names, channels, options["modality"] == "CT"

    def _contents(self) -> tuple[tuple[str, ...], int, bool]:
        return self.contents

    def _release_cases(self, release: Literal["train", "test"]) -> list[VolumeCase]:
        return folder_pair_cases(self.root_path, release)
