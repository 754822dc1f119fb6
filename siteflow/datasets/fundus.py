"""Optic disc and cup segmentation on the DoFE fundus domains layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from siteflow.datasets.base import SegmentationDataset, Split
from siteflow.datasets.files import SampleFiles, find_same_stem, list_images
from siteflow.core.registry import DATASETS


class DofeDomainDataset(SegmentationDataset):
    """One domain (site) of a fundus release in the DoFE layout::

        <root_path>/<folder>/{train,test}/{image,mask}/<name>.png

    ``folder`` is the domain, e.g. ``"Domain1"``. A mask has the name of its image (another
    image suffix is accepted too). Masks are grey (RGB ones are converted): 255 background,
    128 optic disc rim, 0 optic cup, read as classes 0, 1, 2; each pixel takes the nearest of
    the three levels, so resampling noise is harmless. Class 1 is the rim (disc without cup):
    the whole optic disc is classes {1, 2}. The val split is carved from the domain's
    ``train`` folder; ``test`` is the ``test`` folder. Items: image float32 (3, H, W), label
    int64 (H, W) in {0, 1, 2}.

    Args:
        folder: The domain's folder under ``root_path``, e.g. ``"Domain1"``; required.
    """

    class_names = ("background", "disc_rim", "optic_cup")
    mask_levels = (255, 128, 0)
    in_channels = 3

    def __init__(self, split: Split, *, folder: str, **kwargs: Any) -> None:
        self.folder = folder
        super().__init__(split, **kwargs)

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        paths = super().required_paths(**kwargs)
        if "root_path" in kwargs and "folder" in kwargs:
            paths["folder"] = Path(kwargs["root_path"]) / kwargs["folder"]
        return paths

    def _release_samples(self, release: Literal["train", "test"]) -> list[SampleFiles]:
        part = self._part(release)
        return [
            SampleFiles(image.stem, image, find_same_stem(image, part / "mask", "mask"))
            for image in list_images(part / "image")
        ]

    def _part(self, release: Literal["train", "test"]) -> Path:
        """The folder that holds the ``image`` and ``mask`` folders of ``release``."""
        return self.root_path / self.folder / release


@DATASETS.register("fundus")
class FundusDataset(DofeDomainDataset):
    """One domain of the DoFE fundus release (see :class:`DofeDomainDataset`); ``use_roi``
    reads the ``ROIs`` sub-folders, ``<root_path>/<folder>/{train,test}/ROIs/{image,mask}``
    (crops around the optic disc), instead of the full images.

    Args:
        use_roi: Read the ``ROIs`` crops around the optic disc instead of the full images
            (default false: the full images).
    """

    def __init__(self, split: Split, *, use_roi: bool = False, **kwargs: Any) -> None:
        self.use_roi = use_roi
        super().__init__(split, **kwargs)

    def _part(self, release: Literal["train", "test"]) -> Path:
        part = super()._part(release)
        return part / "ROIs" if self.use_roi else part
