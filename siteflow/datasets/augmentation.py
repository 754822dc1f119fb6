"""Data augmentation of segmentation items: image and label transformed together, through
albumentations (measured against MONAI and kornia in ``benchmarks/loader.py``).

An ``augmentation`` option is a preset name (:data:`PRESETS`) or an explicit list of steps
``{"name": ..., "kwargs": {...}}`` from the fixed table :data:`TRANSFORMS`. A step's
``kwargs`` are those of its albumentations transform that the table allows (``p``, the
probability of the step, always); what keeps the labels valid is set by siteflow and cannot
be given: labels are resampled by nearest neighbour (class ids are copied, never blended),
and pixels brought in from outside the image get the image value 0 (out_range's low end)
and the label of ignored pixels (the dataset's ignore index, or background 0 when it has
none). Intensity and colour steps change the image only.

Spatial steps run first, then intensity and colour steps, each group in the listed order.
Every random draw of an item comes from one ``numpy.random.Generator`` (each transform gets
its own seed from it: albumentations' ``Compose.set_random_seed`` gives all its transforms
the same seed, which would make e.g. a horizontal and a vertical flip always fire together).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

# albumentations asks the network for a newer release on import unless told not to: siteflow
# never reaches the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402  (after the variable above)
import cv2  # noqa: E402

from siteflow.core.errors import nearest  # noqa: E402

Kind = Literal["spatial", "intensity", "colour"]
PresetName = Literal["none", "light", "default"]
"""The names of :data:`PRESETS`."""
SEED_RANGE = 2**32
RESAMPLING_ARGUMENTS = ("mask_interpolation", "fill", "fill_mask", "border_mode")
"""The arguments of a resampling transform that siteflow sets so that the labels stay valid."""


@dataclass(frozen=True)
class Transform:
    """An entry of :data:`TRANSFORMS`: the albumentations class, what it changes, and the
    keyword arguments a config may give it (the others are siteflow's or change the size)."""

    factory: Callable[..., A.BasicTransform]
    kind: Kind
    allowed: tuple[str, ...]
    resamples: bool = False  # moves pixels by a map: takes RESAMPLING_ARGUMENTS

TRANSFORMS: dict[str, Transform] = {
    "horizontal_flip": Transform(A.HorizontalFlip, "spatial", ("p",)),
    "vertical_flip": Transform(A.VerticalFlip, "spatial", ("p",)),
    "rotate": Transform(A.Rotate, "spatial", ("limit", "interpolation", "p"), resamples=True),
    "affine": Transform(
        A.Affine,
        "spatial",
        ("scale", "translate_percent", "rotate", "shear", "interpolation", "keep_ratio", "balanced_scale", "p"),
        resamples=True,
    ),
    "elastic": Transform(
        A.ElasticTransform, "spatial", ("alpha", "sigma", "interpolation", "approximate", "same_dxdy", "p"), resamples=True
    ),
    "brightness_contrast": Transform(
        A.RandomBrightnessContrast, "intensity", ("brightness_limit", "contrast_limit", "brightness_by_max", "p")
    ),
    "gamma": Transform(A.RandomGamma, "intensity", ("gamma_limit", "p")),
    "gaussian_noise": Transform(A.GaussNoise, "intensity", ("std_range", "mean_range", "per_channel", "p")),
    "gaussian_blur": Transform(A.GaussianBlur, "intensity", ("blur_limit", "sigma_limit", "p")),
    "color_jitter": Transform(A.ColorJitter, "colour", ("brightness", "contrast", "saturation", "hue", "p")),
    "hue_saturation": Transform(A.HueSaturationValue, "colour", ("hue_shift_limit", "sat_shift_limit", "val_shift_limit", "p")),
}
"""The transforms an ``augmentation`` list may name. Spatial: flips, rotation, affine (scaling,
rotation, translation, shear), elastic deformation; intensity: brightness and contrast,
gamma, Gaussian noise, Gaussian blur; colour (3-channel images only): colour jitter, hue and
saturation."""

PRESETS: dict[PresetName, list[dict[str, Any]]] = {
    "none": [],
    # flips, a small rotation, a little brightness and contrast
    "light": [
        {"name": "horizontal_flip", "kwargs": {"p": 0.5}},
        {"name": "vertical_flip", "kwargs": {"p": 0.5}},
        {"name": "rotate", "kwargs": {"limit": 15, "p": 0.5}},
        {"name": "brightness_contrast", "kwargs": {"brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.3}},
    ],
    # nnU-Net's 2D augmentation in spirit (rotation, scaling, noise, blur, brightness, contrast,
    # gamma, mirroring), with a mild elastic deformation, and colour jitter for RGB images
    "default": [
        {"name": "affine", "kwargs": {"rotate": [-180, 180], "p": 0.2}},
        {"name": "affine", "kwargs": {"scale": [0.7, 1.4], "p": 0.2}},
        {"name": "elastic", "kwargs": {"alpha": 80, "sigma": 8, "approximate": True, "p": 0.2}},
        {"name": "horizontal_flip", "kwargs": {"p": 0.5}},
        {"name": "vertical_flip", "kwargs": {"p": 0.5}},
        {"name": "gaussian_noise", "kwargs": {"std_range": [0.0, 0.05], "p": 0.1}},
        {"name": "gaussian_blur", "kwargs": {"blur_limit": 0, "sigma_limit": [0.5, 1.0], "p": 0.2}},
        {"name": "brightness_contrast", "kwargs": {"brightness_limit": 0.25, "contrast_limit": 0.25, "p": 0.3}},
        {"name": "gamma", "kwargs": {"gamma_limit": [70, 150], "p": 0.3}},
        {"name": "color_jitter", "kwargs": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.2, "hue": 0.03, "p": 0.3}},
    ],
}
"""The named presets. ``default`` drops its colour steps for grey images (an explicit colour
step on grey images is an error)."""

def resolve_steps(option: Any, in_channels: int, key: str = "augmentation") -> list[tuple[str, dict[str, Any]]]:
    """``(name, kwargs)`` of every step of an ``augmentation`` option, checked.

    Raises ValueError naming ``key`` (and the step) for an unknown preset or transform name
    (with the allowed names), a step that is not ``{name, kwargs}``, a keyword argument the
    table does not allow (naming the allowed ones; those that keep the labels valid are
    refused as such), or a colour step on grey images.
    """
    if isinstance(option, str):
        if option not in PRESETS:
            raise ValueError(
                f"{key}: unknown preset {option!r}{nearest(option, PRESETS)} "
                f"(presets: {', '.join(PRESETS)}; or a list of steps from: {', '.join(TRANSFORMS)})"
            )
        steps = [s for s in PRESETS[option] if in_channels == 3 or TRANSFORMS[s["name"]].kind != "colour"]
        return [(step["name"], dict(step["kwargs"])) for step in steps]
    if not isinstance(option, (list, tuple)):
        raise ValueError(f"{key}: expected a preset name ({', '.join(PRESETS)}) or a list of steps, got {option!r}")
    return [_checked_step(step, in_channels, f"{key}[{index}]") for index, step in enumerate(option)]


def _checked_step(step: Any, in_channels: int, key: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(step, Mapping) or "name" not in step or set(step) - {"name", "kwargs"}:
        raise ValueError(f"{key}: a step is {{name: <transform>, kwargs: {{...}}}}, got {step!r}")
    name, kwargs = step["name"], step.get("kwargs") or {}
    if name not in TRANSFORMS:
        raise ValueError(f"{key}.name: unknown transform {name!r}{nearest(str(name), TRANSFORMS)} (allowed: {', '.join(TRANSFORMS)})")
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{key}.kwargs: expected a mapping, got {kwargs!r}")
    entry = TRANSFORMS[name]
    for argument in kwargs:
        if entry.resamples and argument in RESAMPLING_ARGUMENTS:
            raise ValueError(
                f"{key}.kwargs.{argument}: set by siteflow so that the labels stay valid (labels are resampled "
                f"by nearest neighbour, pixels from outside the image get the ignored label); remove it"
            )
        if argument not in entry.allowed:
            raise ValueError(
                f"{key}.kwargs.{argument}: not an option of {name}{nearest(str(argument), entry.allowed)} "
                f"(allowed: {', '.join(entry.allowed)})"
            )
    if entry.kind == "colour" and in_channels != 3:
        raise ValueError(f"{key}: {name} changes colours and needs 3-channel images, these have {in_channels}")
    return name, dict(kwargs)


def _build(name: str, kwargs: dict[str, Any], label_fill: int, key: str) -> A.BasicTransform:
    """The albumentations transform of a checked step; ValueError naming ``key`` for values
    albumentations refuses."""
    entry = TRANSFORMS[name]
    fixed = (
        {"mask_interpolation": cv2.INTER_NEAREST, "fill": 0, "fill_mask": label_fill, "border_mode": cv2.BORDER_CONSTANT}
        if entry.resamples
        else {}
    )
    try:
        return entry.factory(**kwargs, **fixed)
    except (ValueError, TypeError) as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{key} ({name}): bad kwargs {kwargs!r}: {detail}") from None


class Augmentation:
    """The augmentation pipeline of one dataset.

    Labels travel through it as codes, uint8 (H, W): class ids 0 .. K-1, and K for ignored
    pixels (:meth:`encode` / :meth:`decode`), so that any ignore index survives the uint8
    arithmetic of OpenCV.

    Args:
        option: a preset name or a list of steps (see :func:`resolve_steps`).
        in_channels: C of the images.
        num_classes: K, the number of classes (at most 255).
        ignore_index: the label value of ignored pixels, or None.
        out_range: the values that black and white become in items (for :meth:`batch`).
        key: the option's name in error messages.
    """

    def __init__(
        self,
        option: Any,
        *,
        in_channels: int,
        num_classes: int,
        ignore_index: int | None,
        out_range: tuple[float, float] = (-1.0, 1.0),
        key: str = "augmentation",
    ) -> None:
        if num_classes > 255:
            raise ValueError(f"{key}: labels are augmented as 8-bit codes; {num_classes} classes are too many")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.out_range = out_range
        self.ignored_code = num_classes
        self.fill_code = num_classes if ignore_index is not None else 0
        self.label_fill = ignore_index if ignore_index is not None else 0  # fill_code as a label
        steps = resolve_steps(option, in_channels, key)
        built = [
            (TRANSFORMS[name].kind, _build(name, kwargs, self.fill_code, f"{key}[{index}]"))
            for index, (name, kwargs) in enumerate(steps)
        ]
        self.steps = [name for name, _ in steps]
        self.spatial = A.Compose([t for kind, t in built if kind == "spatial"])
        self.pixel = A.Compose([t for kind, t in built if kind != "spatial"])

    @property
    def has_spatial(self) -> bool:
        """Whether a step moves pixels (flips, rotation, scaling, elastic)."""
        return bool(self.spatial.transforms)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def encode(self, label: np.ndarray) -> np.ndarray:
        """Codes uint8 (H, W) of class ids int64 (H, W) (ignored pixels -> K)."""
        codes = label.astype(np.uint8)
        if self.ignore_index is not None:
            codes[label == self.ignore_index] = self.ignored_code
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Class ids int64 (H, W) of codes uint8 (H, W) (K -> the ignore index)."""
        label = codes.astype(np.int64)
        if self.ignore_index is not None:
            label[codes == self.ignored_code] = self.ignore_index
        return label

    def move(self, image: np.ndarray, codes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The spatial steps: image (H, W, C) uint8 or float32 in [0, 1] and label codes uint8
        (H, W), moved together; same shapes and dtypes out."""
        if not self.has_spatial:
            return image, codes
        out = _seeded(self.spatial, rng)(image=image, mask=codes)
        return out["image"], out["mask"]

    def recolour(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The intensity and colour steps on image (H, W, C) uint8 or float32 in [0, 1]."""
        if not self.pixel.transforms:
            return image
        return _seeded(self.pixel, rng)(image=image)["image"]

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Every step on image (H, W, C) uint8 or float32 in [0, 1] and class ids int64 (H, W)."""
        image, codes = self.move(image, self.encode(label), rng)
        return self.recolour(image, rng), self.decode(codes)

    def batch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline on a batch (e.g. relay's replayed images), one seed per sample drawn from
        ``generator``: images (N, C, H, W) float in out_range, labels (N, H, W) int64 ->
        the same shapes, dtypes and device (images clipped to out_range first)."""
        low, high = self.out_range
        pixels = ((images.detach().float().cpu().clamp(low, high) - low) / (high - low)).permute(0, 2, 3, 1).numpy()
        seeds = torch.randint(0, SEED_RANGE, (len(images),), generator=generator).tolist()
        moved = [self(np.ascontiguousarray(p), label.cpu().numpy(), np.random.default_rng(s))
                 for p, label, s in zip(pixels, labels, seeds)]
        out_images = torch.from_numpy(np.stack([image for image, _ in moved])).permute(0, 3, 1, 2) * (high - low) + low
        out_labels = torch.from_numpy(np.stack([label for _, label in moved]))
        return out_images.to(images.device, images.dtype).contiguous(), out_labels.to(labels.device)


def _seeded(compose: A.Compose, rng: np.random.Generator) -> A.Compose:
    """``compose`` with each of its transforms seeded from ``rng`` separately."""
    compose.set_random_seed(int(rng.integers(SEED_RANGE)))
    for transform in compose.transforms:
        transform.set_random_seed(int(rng.integers(SEED_RANGE)))
    return compose
