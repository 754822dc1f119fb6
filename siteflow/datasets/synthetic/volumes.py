"""A synthetic multi-site 3D segmentation study, deterministic by seed: MRI-like volumes of a
body holding an organ-like ellipsoid (class 1) with a core (class 2), each site with its own
scanner: intensity scale and offset, contrast (gamma), noise, anisotropic voxel spacing,
field of view and orientation. Written as NIfTI in the Decathlon layout, one task folder per
site (``Site1``, ``Site2``, ...), test cases labelled in ``labelsTs``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siteflow.core.atomic import atomic_path, write_json
from siteflow.core.extras import optional_module

sitk = optional_module("SimpleITK", "volumes", "writing the synthetic volumes (NIfTI)")

CLASS_NAMES = ("background", "organ", "core")


@dataclass(frozen=True)
class VolumeScanner:
    """One site's scanner: ``spacing`` (z, y, x) in mm, ``field_of_view`` (z, y, x) in mm,
    intensities ``offset + scale * tissue ** gamma`` plus Gaussian noise of ``noise`` (in units
    of ``scale``), and ``flipped``: stored in LPS order (x and y reversed) instead of RAS."""

    spacing: tuple[float, float, float]
    field_of_view: tuple[float, float, float]
    scale: float
    offset: float
    gamma: float
    noise: float
    flipped: bool


SCANNERS = (
    VolumeScanner((2.0, 1.5, 1.5), (40.0, 60.0, 60.0), 1000.0, 0.0, 1.0, 0.08, False),
    VolumeScanner((3.0, 1.2, 1.2), (42.0, 66.0, 66.0), 600.0, 200.0, 0.7, 0.12, True),
    VolumeScanner((1.5, 2.0, 2.0), (39.0, 56.0, 56.0), 1500.0, -100.0, 1.4, 0.05, False),
)
"""The scanners of the sites, in turn (site k has ``SCANNERS[(k - 1) % 3]``)."""
TISSUE = (0.3, 0.6, 0.9)  # body, organ, core, before the scanner


def phantom(scanner: VolumeScanner, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One case on ``scanner``'s grid: intensities float32 (D, H, W) (0 outside the body) and
    labels uint8 (D, H, W) in {0, 1, 2}, in RAS voxel order."""
    shape = [max(8, round(f / s)) for f, s in zip(scanner.field_of_view, scanner.spacing)]
    axes = [(np.arange(n) + 0.5) * s - n * s / 2 for n, s in zip(shape, scanner.spacing)]  # mm from the centre
    z, y, x = np.meshgrid(*axes, indexing="ij")
    half = np.asarray(scanner.field_of_view) / 2
    body = (z / (half[0] * 1.2)) ** 2 + (y / (half[1] * 0.95)) ** 2 + (x / (half[2] * 0.9)) ** 2 <= 1
    centre = rng.uniform(-4, 4, 3)
    radii = np.array([rng.uniform(7, 10), rng.uniform(10, 15), rng.uniform(10, 15)])
    organ = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2 <= 1
    core_centre = centre + rng.uniform(-1.5, 1.5, 3)
    core_radii = radii * rng.uniform(0.4, 0.55)
    core = ((z - core_centre[0]) / core_radii[0]) ** 2 + ((y - core_centre[1]) / core_radii[1]) ** 2 + (
        (x - core_centre[2]) / core_radii[2]
    ) ** 2 <= 1
    label = np.zeros(shape, dtype=np.uint8)
    label[organ & body] = 1
    label[core & organ & body] = 2
    tissue = np.where(body, np.asarray(TISSUE, dtype=np.float64)[label], 0.0) ** scanner.gamma
    values = scanner.offset + scanner.scale * (tissue + scanner.noise * rng.standard_normal(shape))
    return np.where(body, values, 0.0).astype(np.float32), label


def to_image(array: np.ndarray, scanner: VolumeScanner) -> sitk.Image:
    """``array`` (D, H, W) in RAS voxel order as a SimpleITK image with ``scanner``'s spacing,
    centred on the origin, stored in LPS order when the scanner is ``flipped``."""
    if scanner.flipped:
        array = array[:, ::-1, ::-1]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    spacing = scanner.spacing[::-1]
    image.SetSpacing(spacing)
    size = image.GetSize()
    # SimpleITK's physical space is LPS: RAS axes are directions (-1, -1, 1).
    signs = (1.0, 1.0, 1.0) if scanner.flipped else (-1.0, -1.0, 1.0)
    image.SetDirection((signs[0], 0, 0, 0, signs[1], 0, 0, 0, signs[2]))
    image.SetOrigin(tuple(-sign * (n - 1) * s / 2 for sign, n, s in zip(signs, size, spacing)))
    return image


def generate_volume_sites(
    folder: Path, *, num_sites: int = 3, train_per_site: int = 8, test_per_site: int = 3, seed: int = 0
) -> None:
    """Writes the study into ``folder``: ``Site<k>/{dataset.json, imagesTr, labelsTr,
    imagesTs, labelsTs}`` with ``case_<nnn>.nii.gz`` files, each file atomically; the same
    arguments write the same voxels."""
    if num_sites < 1 or train_per_site < 1 or test_per_site < 1:
        raise ValueError("num_sites, train_per_site and test_per_site must be at least 1")
    for site in range(1, num_sites + 1):
        scanner = SCANNERS[(site - 1) % len(SCANNERS)]
        root = Path(folder) / f"Site{site}"
        for part, count, first in (("Tr", train_per_site, 0), ("Ts", test_per_site, train_per_site)):
            for case in range(first, first + count):
                image, label = phantom(scanner, np.random.default_rng([seed, site, case]))
                for kind, array in (("images", image), ("labels", label)):
                    with atomic_path(root / f"{kind}{part}" / f"case_{case:03d}.nii.gz") as tmp:
                        sitk.WriteImage(to_image(array, scanner), str(tmp), useCompression=True)
        description = {
            "name": f"synthetic volumes, site {site}",
            "modality": {"0": "MRI"},
            "labels": {str(value): name for value, name in enumerate(CLASS_NAMES)},
            "numTraining": train_per_site,
            "numTest": test_per_site,
        }
        write_json(root / "dataset.json", description)
