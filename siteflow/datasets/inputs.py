"""How a dataset turns one unlabelled input into the model's input: the preprocessing that
inference on new images must repeat exactly.

A dataset class says which preprocessing its items have through its classmethod
``input_preprocessing`` (config options -> an :class:`InputPreprocessing`), which reads no
file. Each kind calls the very functions the datasets call on their items:
:class:`ImageInput` (2D segmentation images: :func:`~siteflow.datasets.files.unit_pixels`,
:func:`~siteflow.datasets.files.scaled_tensor`),
:class:`~siteflow.datasets.chest_xray.inputs.XrayInput` (radiographs) and
:class:`~siteflow.datasets.volumes.inputs.VolumeInput` (volumes), so an input read here is
the item a test split would hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from siteflow.datasets.files import scaled_tensor, unit_pixels
from siteflow.datasets.image_files import read_pixels


class InputPreprocessing(Protocol):
    """The preprocessing of one kind of input (see the module)."""

    kind: ClassVar[str]
    spatial_dims: ClassVar[int]
    channels: int

    def to_json(self) -> dict[str, Any]:
        """The options as JSON, ``kind`` included (a model card's ``input``)."""


@dataclass(frozen=True)
class ImageInput:
    """The preprocessing of a 2D image file of a segmentation dataset: 8-bit grey or colour,
    16-bit grey (see :mod:`~siteflow.datasets.image_files`), resized and scaled.

    Attributes:
        channels: C of the model's input (1 grey, 3 RGB).
        img_size: (height, width) the image is resized to (bilinearly); None: its native size.
        out_range: the values that black and white become.
    """

    channels: int
    img_size: tuple[int, int] | None
    out_range: tuple[float, float]

    kind: ClassVar[str] = "image"
    spatial_dims: ClassVar[int] = 2

    def __call__(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        """The model's input float32 (C, h, w) of the image file ``path``, and the image's
        native (H, W). Raises DataError naming ``path`` for any problem of the file."""
        pixels = read_pixels(path, self.channels)
        return scaled_tensor(unit_pixels(pixels, self.img_size), self.out_range), pixels.shape[:2]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}
