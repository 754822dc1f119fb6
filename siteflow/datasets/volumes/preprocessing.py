"""Preprocessing of a volume case as nnU-Net does it, on SimpleITK images: reorientation,
resampling to a target spacing, cropping to the non-zero region, intensity normalisation.

Order: reorient (``sitk.DICOMOrient``), resample (image linear or B-spline, label nearest),
crop to the box where any channel is non-zero, then normalise each channel. SimpleITK keeps
the physical geometry through every step (a crop moves the origin), so that a prediction on
the preprocessed grid is brought back to the source grid by resampling in physical space
(:func:`to_source_grid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from siteflow.core.extras import optional_module

sitk = optional_module("SimpleITK", "volumes", "resampling volumes")

Interpolation = Literal["linear", "bspline"]
Normalisation = Literal["auto", "ct", "mri", "none"]
INTERPOLATORS = {"linear": "sitkLinear", "bspline": "sitkBSpline"}
"""The image interpolations by option value: SimpleITK's constants, by name."""
ORIENTATION_LETTERS = ("RL", "AP", "SI")
CT_PERCENTILES = (0.5, 99.5)
"""The percentiles of the training data's foreground intensities that CT is clipped to when no
window is set (nnU-Net's)."""
CT_SAMPLES_PER_CASE = 10_000
"""Foreground voxels drawn from each training case for the CT statistics (nnU-Net's number)."""
CtStatistics = tuple[tuple[float, float, float, float], ...]
"""Per channel: (low, high, mean, std) of CT normalisation."""


def checked_orientation(value: str | None, key: str = "orientation") -> str | None:
    """An ``orientation`` option (three letters, one of R/L, A/P, S/I each, e.g. ``RAS``,
    ``LPS``), upper-cased; ValueError naming ``key`` otherwise."""
    if value is None:
        return None
    code = value.upper()
    if len(code) != 3 or sorted(next((i for i, pair in enumerate(ORIENTATION_LETTERS) if c in pair), -1) for c in code) != [0, 1, 2]:
        raise ValueError(f"{key} must be three letters, one of R/L, A/P and S/I each (e.g. RAS, LPS), not {value!r}")
    return code


def checked_spacing(value: Sequence[float] | None, key: str = "spacing") -> tuple[float, float, float] | None:
    """A ``spacing`` option, (depth, height, width) in mm, checked: ValueError naming ``key``
    unless it is three positive numbers."""
    if value is None:
        return None
    if len(value) != 3 or min(value) <= 0:
        raise ValueError(f"{key} must be [depth, height, width] spacing in mm, all > 0, not {list(value)!r}")
    return float(value[0]), float(value[1]), float(value[2])


def checked_window(value: Sequence[float] | None, key: str = "ct_window") -> tuple[float, float] | None:
    """A ``ct_window`` option, [low, high] intensities; ValueError naming ``key`` unless low < high."""
    if value is None:
        return None
    if len(value) != 2 or not value[0] < value[1]:
        raise ValueError(f"{key} must be [low, high] intensities with low < high, not {list(value)!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing of one dataset (its options, checked).

    Attributes:
        spacing: target (depth, height, width) voxel spacing in mm, i.e. (z, y, x) of the
            array; None keeps each case's own spacing.
        interpolation: of the image when resampling, ``linear`` or ``bspline`` (labels: nearest).
        orientation: the orientation every case is turned to (``RAS``, ``LPS``, ...; see
            ``sitk.DICOMOrient``), or None to keep each case's.
        normalisation: ``ct`` (clip to [low, high], subtract mean, divide by std, all four
            from ``ct_statistics``: one dataset-wide normalisation), ``mri`` (z-score per
            volume within its non-zero voxels, the others 0), ``none``; ``auto`` has been
            resolved by the dataset before.
        ct_window: [low, high] intensities (e.g. HU) that ``ct`` clips to; None: the
            percentiles of the training data (see :func:`ct_statistics`).
        crop_nonzero: crop each case to the box where any channel is non-zero.
        ct_statistics: per channel (low, high, mean, std) of ``ct``, from the training data.
    """

    spacing: tuple[float, float, float] | None
    interpolation: Interpolation
    orientation: str | None
    normalisation: Literal["ct", "mri", "none"]
    ct_window: tuple[float, float] | None
    crop_nonzero: bool
    ct_statistics: CtStatistics = ()

    def key(self) -> dict:
        """The options as a JSON-able mapping (part of the decode cache's key)."""
        return asdict(self)

    def grid(self, image: sitk.Image) -> sitk.Image:
        """``image`` reoriented and resampled as the options say (the label's interpolation is
        chosen by its pixel type: integer images are resampled by nearest neighbour)."""
        if self.orientation is not None:
            image = sitk.DICOMOrient(image, self.orientation)
        if self.spacing is None:
            return image
        target = self.spacing[::-1]  # SimpleITK's (x, y, z)
        size = [max(1, round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), target)]
        integer = image.GetPixelID() in (sitk.sitkInt64, sitk.sitkInt32, sitk.sitkInt16, sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkUInt32)
        interpolator = sitk.sitkNearestNeighbor if integer else getattr(sitk, INTERPOLATORS[self.interpolation])
        # the new voxels cover the old field of view: the first centre moves by half the change of spacing
        shift = np.asarray(image.GetDirection()).reshape(3, 3) @ ((np.asarray(target) - image.GetSpacing()) / 2)
        origin = tuple(np.asarray(image.GetOrigin()) + shift)
        return sitk.Resample(
            image, size, sitk.Transform(), interpolator, origin, target, image.GetDirection(), 0.0, image.GetPixelID()
        )

    def __call__(self, channels: list[sitk.Image], label: sitk.Image) -> tuple[np.ndarray, np.ndarray, sitk.Image]:
        """The preprocessed case: image float32 (C, D, H, W), label int64 (D, H, W), and the
        grid they lie on (an empty uint8 SimpleITK image with its size, spacing, origin and
        direction)."""
        channels = [self.grid(channel) for channel in channels]
        label = self.grid(label)
        if self.crop_nonzero:
            box = nonzero_box(channels)
            channels = [channel[box] for channel in channels]
            label = label[box]
        image, grid = self._normalised(channels)
        return image, sitk.GetArrayFromImage(label).astype(np.int64), grid

    def image(self, channels: list[sitk.Image]) -> tuple[np.ndarray, sitk.Image]:
        """A case without a label (inference on new volumes), preprocessed as :meth:`__call__`
        preprocesses a labelled one: image float32 (C, D, H, W) and the grid it lies on."""
        channels = [self.grid(channel) for channel in channels]
        if self.crop_nonzero:
            box = nonzero_box(channels)
            channels = [channel[box] for channel in channels]
        return self._normalised(channels)

    def _normalised(self, channels: list[sitk.Image]) -> tuple[np.ndarray, sitk.Image]:
        """The stacked, normalised arrays float32 (C, D, H, W) of ``channels`` (on one grid) and
        that grid (an empty uint8 image with their size, spacing, origin and direction)."""
        image = np.stack([sitk.GetArrayFromImage(channel) for channel in channels]).astype(np.float32)
        image = np.stack([self.normalise(values, channel) for channel, values in enumerate(image)])
        grid = sitk.Image(channels[0].GetSize(), sitk.sitkUInt8)
        grid.CopyInformation(channels[0])
        return image, grid

    def normalise(self, values: np.ndarray, channel: int) -> np.ndarray:
        """Channel ``channel`` float32 (D, H, W), normalised as ``normalisation`` says."""
        if self.normalisation == "none":
            return values
        if self.normalisation == "ct":
            if channel >= len(self.ct_statistics):
                raise ValueError(f"ct normalisation of channel {channel} needs its statistics from the training data")
            low, high, mean, std = self.ct_statistics[channel]
            return ((np.clip(values, low, high) - mean) / max(std, 1e-8)).astype(np.float32)
        inside = values != 0
        if not inside.any():
            return values
        mean, std = values[inside].mean(), max(float(values[inside].std()), 1e-8)
        return np.where(inside, (values - mean) / std, 0.0).astype(np.float32)


def ct_statistics(foreground: Sequence[np.ndarray], window: tuple[float, float] | None) -> CtStatistics:
    """nnU-Net's CT normalisation from the training data: per channel, ``foreground[c]`` (the
    intensities of foreground voxels of the training cases, 1D) clipped to ``window`` (or to
    their :data:`CT_PERCENTILES`), and the mean and standard deviation of the clipped values."""
    statistics = []
    for values in foreground:
        low, high = window or tuple(float(v) for v in np.percentile(values, CT_PERCENTILES))
        clipped = np.clip(values.astype(np.float64), low, high)
        statistics.append((float(low), float(high), float(clipped.mean()), float(clipped.std())))
    return tuple(statistics)


def nonzero_box(channels: list[sitk.Image]) -> tuple[slice, slice, slice]:
    """The (x, y, z) slices, SimpleITK's order, of the smallest box holding every voxel where a
    channel is non-zero (the whole grid when none is)."""
    nonzero = np.any(np.stack([sitk.GetArrayFromImage(channel) != 0 for channel in channels]), axis=0)  # (D, H, W)
    if not nonzero.any():
        return slice(None), slice(None), slice(None)
    bounds = []
    for axis in range(3):
        present = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
        bounds.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(bounds[::-1])


def to_source_grid(pred: np.ndarray, grid: sitk.Image, source: sitk.Image) -> sitk.Image:
    """A prediction uint8/int (D, H, W) on the preprocessed ``grid`` brought back to the grid of
    ``source`` (the case's original image: size, spacing, origin, direction) by nearest-neighbour
    resampling in physical space; voxels outside the preprocessed region (cropped) become 0.
    Returns a uint8 SimpleITK image with ``source``'s geometry."""
    moved = sitk.GetImageFromArray(pred.astype(np.uint8))
    moved.CopyInformation(grid)
    return onto_source_grid(moved, source, sitk.sitkNearestNeighbor)


def onto_source_grid(image: sitk.Image, source: sitk.Image, interpolator: int) -> sitk.Image:
    """``image`` (on a preprocessed grid, scalar or vector) resampled in physical space onto the
    3D grid of ``source`` with ``interpolator``; outside ``image``, 0. Keeps the pixel type."""
    reference = sitk.Image(source.GetSize()[:3], sitk.sitkUInt8)
    reference.SetSpacing(source.GetSpacing()[:3])
    reference.SetOrigin(source.GetOrigin()[:3])
    direction = np.asarray(source.GetDirection())
    reference.SetDirection(direction.reshape(4, 4)[:3, :3].ravel().tolist() if direction.size == 16 else direction.tolist())
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0, image.GetPixelID())
