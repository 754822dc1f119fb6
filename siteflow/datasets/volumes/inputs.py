"""The preprocessing of a new volume, as the volume datasets make their items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from siteflow.datasets.volumes.preprocessing import Preprocessing

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass(frozen=True)
class VolumeInput:
    """Reorientation, resampling, cropping and normalisation of a volume's channels (see
    :class:`~siteflow.datasets.volumes.preprocessing.Preprocessing`).

    Attributes:
        channels: C of the model's input (the channels of the volume's file or files).
        preprocessing: the dataset's options; CT normalisation also needs the training data's
            ``ct_statistics`` (see :attr:`needs_statistics`).
    """

    channels: int
    preprocessing: Preprocessing

    kind: ClassVar[str] = "volume"
    spatial_dims: ClassVar[int] = 3

    @property
    def needs_statistics(self) -> bool:
        """Whether the preprocessing lacks the training data's CT statistics that it needs."""
        return self.preprocessing.normalisation == "ct" and len(self.preprocessing.ct_statistics) < self.channels

    def __call__(self, channels: list[sitk.Image]) -> tuple[torch.Tensor, sitk.Image]:
        """The model's input float32 (C, D, H, W) of a volume's channels (3D SimpleITK images on
        one grid), and the grid it lies on (see
        :meth:`~siteflow.datasets.volumes.preprocessing.Preprocessing.image`)."""
        if self.needs_statistics:
            raise ValueError("CT normalisation needs the training data's statistics (ct_statistics), which are missing")
        image, grid = self.preprocessing.image(channels)
        return torch.from_numpy(image), grid

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "preprocessing": self.preprocessing.key()}
