"""3D data augmentation of volume patches, through MONAI's dictionary transforms: image
(C, D, H, W) and label (D, H, W) moved together, the label by nearest neighbour (class ids are
copied, never blended), voxels from outside the volume get image 0 and background 0.

An ``augmentation`` option names a preset of :data:`VOLUME_PRESETS`. ``default`` is nnU-Net's
3D augmentation in spirit: rotation and scaling, elastic deformation, mirroring on every axis,
Gaussian noise and blur, brightness (intensity scaling), contrast (gamma) and simulated low
resolution. Every random draw of an item comes from one ``numpy.random.Generator`` (the
dataset's item seed): the spatial and the intensity pipelines are seeded from it in turn.
"""

from __future__ import annotations

import math
from typing import Literal

import monai.transforms as T
import numpy as np
from monai.utils import convert_to_numpy

VolumePreset = Literal["none", "light", "default"]
SEED_RANGE = 2**32
KEYS = ("image", "label")


def _spatial(preset: VolumePreset) -> list[T.MapTransform]:
    flips = [T.RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in range(3)]
    if preset == "none":
        return []
    if preset == "light":
        return flips
    rotation = math.radians(15)
    return [
        T.RandAffined(
            KEYS, prob=0.2, rotate_range=(rotation, rotation, rotation), scale_range=(0.15, 0.15, 0.15),
            mode=("bilinear", "nearest"), padding_mode="zeros",
        ),
        T.Rand3DElasticd(
            KEYS, sigma_range=(5, 7), magnitude_range=(50, 150), prob=0.1,
            mode=("bilinear", "nearest"), padding_mode="zeros",
        ),
        *flips,
    ]


def _intensity(preset: VolumePreset) -> list[T.MapTransform]:
    if preset == "none":
        return []
    if preset == "light":
        return [T.RandScaleIntensityd("image", factors=0.1, prob=0.3)]
    return [
        T.RandGaussianNoised("image", std=0.1, prob=0.1),
        T.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        T.RandAdjustContrastd("image", gamma=(0.7, 1.5), retain_stats=True, prob=0.3),
        T.RandSimulateLowResolutiond("image", zoom_range=(0.5, 1.0), prob=0.25),
    ]


class VolumeAugmentation:
    """The augmentation of one volume dataset's training patches.

    Args:
        preset: ``none``, ``light`` (flips on every axis, a little intensity scaling) or
            ``default`` (see the module).
    """

    def __init__(self, preset: VolumePreset) -> None:
        if preset not in ("none", "light", "default"):
            raise ValueError(f"augmentation must be one of none, light, default for volumes, not {preset!r}")
        self.preset = preset
        self.spatial = T.Compose(_spatial(preset))
        self.intensity = T.Compose(_intensity(preset))

    @property
    def has_spatial(self) -> bool:
        """Whether a step moves voxels (flips, rotation, scaling, elastic)."""
        return bool(self.spatial.transforms)

    def __bool__(self) -> bool:
        return self.preset != "none"

    def move(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The spatial steps on image float32 (C, D, H, W) and label int64 (D, H, W); same shapes
        and dtypes out."""
        if not self.has_spatial:
            return image, label
        self.spatial.set_random_state(seed=int(rng.integers(SEED_RANGE)))
        out = self.spatial({"image": image, "label": label[None].astype(np.float32)})
        moved = convert_to_numpy(out["label"])[0]
        return convert_to_numpy(out["image"]).astype(np.float32), np.rint(moved).astype(np.int64)

    def recolour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The intensity steps on image float32 (C, D, H, W)."""
        if not self.intensity.transforms:
            return image
        self.intensity.set_random_state(seed=int(rng.integers(SEED_RANGE)))
        return convert_to_numpy(self.intensity({"image": image})["image"]).astype(np.float32)
