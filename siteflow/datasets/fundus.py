"""Optic disc and cup segmentation on the DoFE fundus domains layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from siteflow.datasets.base import SegmentationDataset, Split
from siteflow.datasets.files import SampleFiles, find_same_stem, list_images
from siteflow.core.registry import DATASETS


@DATASETS.register("fundus")
class FundusDataset(SegmentationDataset):
    """One domain (site) of the DoFE fundus release::

        <root_path>/<folder>/{train,test}/[ROIs/]{image,mask}/<name>.png

    ``folder`` is the domain, e.g. ``"Domain1"``; ``use_roi`` reads the ``ROIs`` sub-folder
    (crops around the optic disc) instead of the full images. A mask has the name of its
    image (another image suffix is accepted too). Masks are grey (RGB ones are converted):
    255 background, 128 optic disc rim, 0 optic cup, read as classes 0, 1, 2; each pixel takes
    the nearest of the three levels, so resampling noise is harmless. Class 1 is the rim
    (disc without cup): the whole optic disc is classes {1, 2}. The val split is carved from
    the domain's ``train`` folder; ``test`` is the ``test`` folder. Items: image float32
    (3, H, W), label int64 (H, W) in {0, 1, 2}.
    """

    class_names = ("background", "disc_rim", "optic_cup")
    mask_levels = (255, 128, 0)
    in_channels = 3

    def __init__(
        self,
        split: Split,
        *,
        root_path: str,
        folder: str,
        use_roi: bool = False,
        img_size: list[int] | None = None,
        out_range: tuple[float, ...] = (-1.0, 1.0),
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_replica: int = 1,
    ) -> None:
        self.root_path = Path(root_path)
        self.folder = folder
        self.use_roi = use_roi
        super().__init__(
            split,
            img_size=img_size,
            out_range=out_range,
            val_fraction=val_fraction,
            split_seed=split_seed,
            num_replica=num_replica,
        )

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        paths = super().required_paths(**kwargs)
        if "root_path" in kwargs and "folder" in kwargs:
            paths["folder"] = Path(kwargs["root_path"]) / kwargs["folder"]
        return paths

    def _release_samples(self, release: Literal["train", "test"]) -> list[SampleFiles]:
        part = self.root_path / self.folder / release
        if self.use_roi:
            part = part / "ROIs"
        return [
            SampleFiles(image.stem, image, find_same_stem(image, part / "mask", "mask"))
            for image in list_images(part / "image")
        ]
