"""The preprocessing of a new radiograph, as the chest X-ray datasets make their items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from siteflow.datasets.chest_xray.images import read_xray, xray_tensor
from siteflow.datasets.inputs import ImageInput


@dataclass(frozen=True)
class XrayInput(ImageInput):
    """A radiograph (PNG, JPEG, DICOM file) read as grey in [0, 1]
    (:func:`~siteflow.datasets.chest_xray.images.read_xray`), resized and scaled to the model's
    input (:func:`~siteflow.datasets.chest_xray.images.xray_tensor`); the attributes are
    :class:`~siteflow.datasets.inputs.ImageInput`'s."""

    kind: ClassVar[str] = "xray"

    def __call__(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        grey = read_xray(path)
        return xray_tensor(grey, self.img_size, self.out_range, self.channels), grey.shape
