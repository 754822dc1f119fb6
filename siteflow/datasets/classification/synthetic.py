"""Synthetic skin-lesion-like images of four classes at several sites, written in the real
layouts (a folder per class; ISIC 2019 with FLamby's files; MedMNIST ``.npz``), so that the
real readers are what the tests and the demo use.

Every image comes from its own generator, seeded by (seed, site, part, index): the files are
byte-identical for equal arguments. Sites differ in their class mix (:func:`class_mix`) and in
appearance (colour cast, contrast, blur, noise: :func:`site_look`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from siteflow.core.registry import DATASETS
from siteflow.datasets.base import Split
from siteflow.datasets.classification.folders import ClassFoldersDataset
from siteflow.datasets.classification.isic2019 import CENTERS, GROUND_TRUTH, IMAGE_FOLDERS, ISIC_CLASSES, METADATA, SPLIT
from siteflow.datasets.classification.medmnist import NUM_CLASSES
from siteflow.datasets.synthetic.generated import GeneratedSites

CLASSES = ("nevus", "melanoma", "keratosis", "vascular")
SKIN = np.array([0.85, 0.68, 0.58])
LESION_COLOURS = {  # RGB of each class's lesion
    "nevus": np.array([0.45, 0.3, 0.2]),
    "melanoma": np.array([0.25, 0.15, 0.12]),
    "keratosis": np.array([0.55, 0.42, 0.28]),
    "vascular": np.array([0.6, 0.18, 0.25]),
}
# Bump when the generated files change, so that old caches are not reused.
CLASSES_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SiteLook:
    """A site's acquisition: RGB gain (colour cast), contrast around mid-grey, Gaussian blur
    (pixels) and noise standard deviation."""

    gain: tuple[float, float, float]
    contrast: float
    blur: float
    noise: float


def class_mix(site: int, num_sites: int, num_classes: int = len(CLASSES)) -> np.ndarray:
    """Class shares (K,) of site ``site`` (0-based): the first site mostly the first class, the
    last mostly the last, shifting linearly between them; every class keeps at least 5%."""
    centre = site / max(num_sites - 1, 1) * (num_classes - 1)
    weights = np.exp(-0.5 * ((np.arange(num_classes) - centre) / 1.2) ** 2) + 0.05
    return weights / weights.sum()


def site_look(site: int, num_sites: int) -> SiteLook:
    """Site ``site``'s appearance: a warm cast and sharp images at the first site, a cool cast,
    lower contrast, blur and more noise towards the last."""
    t = site / max(num_sites - 1, 1)
    return SiteLook(gain=(1.05 - 0.15 * t, 1.0, 0.9 + 0.2 * t), contrast=1.1 - 0.35 * t, blur=0.8 * t, noise=0.02 + 0.04 * t)


def draw_lesion(rng: np.random.Generator, size: int, label: int, look: SiteLook) -> np.ndarray:
    """An RGB image uint8 (size, size, 3) of a lesion of class ``label`` (index in
    :data:`CLASSES`) on skin, as a site of ``look`` acquires it.

    nevus: round, smooth and even; melanoma: irregular border, dark, two-toned; keratosis:
    lighter, with a rough, spotted texture; vascular: round and red. Size, position and
    irregularity are jittered, so that classes overlap a little.
    """
    y, x = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) / size * 2 - 1
    cx, cy = rng.uniform(-0.25, 0.25, 2)
    radius = rng.uniform(0.3, 0.55)
    angle = np.arctan2(y - cy, x - cx)
    irregular = {0: 0.06, 1: 0.3, 2: 0.12, 3: 0.05}[label] * rng.uniform(0.5, 1.3)
    border = radius * (1 + irregular * (np.sin(3 * angle + rng.uniform(0, 6.3)) + 0.6 * np.sin(5 * angle + rng.uniform(0, 6.3))))
    inside = np.clip((border - np.hypot(x - cx, y - cy)) / 0.05, 0, 1)[..., None]
    colour = LESION_COLOURS[CLASSES[label]] * rng.uniform(0.85, 1.15)
    lesion = np.broadcast_to(colour, (size, size, 3)).copy()
    if label == 1:  # two-toned
        patch = gaussian_filter(rng.normal(0, 1, (size, size)), size / 8) > 0
        lesion[patch] = lesion[patch] * 1.8
    if label == 2:  # rough, spotted
        lesion *= 1 + 0.35 * rng.normal(0, 1, (size, size, 1))
    skin = SKIN * rng.uniform(0.9, 1.05) + 0.03 * gaussian_filter(rng.normal(0, 1, (size, size, 3)), 2)
    image = skin * (1 - inside) + lesion * inside
    image = 0.5 + (image * np.array(look.gain) - 0.5) * look.contrast
    if look.blur > 0:
        image = gaussian_filter(image, (look.blur, look.blur, 0))
    image = image + rng.normal(0, look.noise, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def site_cases(seed: int, site: int, num_sites: int, part: int, count: int, size: int) -> list[tuple[int, np.ndarray]]:
    """``count`` (class id, image) pairs of ``site``'s part (0 train, 1 test), classes drawn
    from the site's :func:`class_mix`."""
    look, mix = site_look(site, num_sites), class_mix(site, num_sites)
    cases = []
    for index in range(count):
        rng = np.random.default_rng([seed, site, part, index])
        label = int(rng.choice(len(CLASSES), p=mix))
        cases.append((label, draw_lesion(rng, size, label, look)))
    return cases


def generate_class_sites(
    root: str | Path,
    *,
    num_sites: int = 3,
    train_per_site: int = 240,
    test_per_site: int = 120,
    native_size: Sequence[int] = (32, 32),
    seed: int = 0,
) -> Path:
    """Write ``num_sites`` sites in the folder-per-class layout under ``root`` and return it:
    ``site<k>/{train,test}/<class>/<k>_<index>.png``, classes :data:`CLASSES`. Images are
    square, their side spread linearly over ``native_size`` = (first site, last site)."""
    if num_sites < 1 or train_per_site < 2 or test_per_site < 1:
        raise ValueError(f"need a site, 2 train and 1 test images per site, not {num_sites}, {train_per_site}, {test_per_site}")
    root = Path(root)
    for site in range(num_sites):
        size = round(native_size[0] + (native_size[1] - native_size[0]) * site / max(num_sites - 1, 1))
        for part, (name, count) in enumerate((("train", train_per_site), ("test", test_per_site))):
            for index, (label, pixels) in enumerate(site_cases(seed, site, num_sites, part, count, size)):
                path = root / f"site{site + 1}" / name / CLASSES[label] / f"{site + 1}_{index:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


def write_isic2019(root: str | Path, *, per_center: int = 6, size: int = 32, seed: int = 0) -> Path:
    """Write a tiny release in the ISIC 2019 + FLamby layout under ``root`` (see
    :class:`~siteflow.datasets.classification.isic2019.Isic2019Dataset`): ``per_center``
    images of each of FLamby's six centres, one-hot ground truth over the eight classes and
    UNK, the metadata's ``dataset`` column, and FLamby's ``fold2`` split (every third image of
    a centre in test). Returns ``root``."""
    root = Path(root)
    images = root / IMAGE_FOLDERS[0]
    images.mkdir(parents=True, exist_ok=True)
    truth, metadata, folds = [], [], []
    for center, source in enumerate(CENTERS):
        for index in range(per_center):
            rng = np.random.default_rng([seed, center, index])
            label = (center + index) % len(ISIC_CLASSES)
            name = f"ISIC_{center}{index:06d}"
            Image.fromarray(draw_lesion(rng, size, label % len(CLASSES), site_look(center, len(CENTERS)))).save(images / f"{name}.jpg", quality=95)
            truth.append([name, *("1.0" if k == label else "0.0" for k in range(len(ISIC_CLASSES) + 1))])
            metadata.append([name, "30.0", "anterior torso", "", "female", source])
            folds.append([name, label, center, f"{'test' if index % 3 == 2 else 'train'}_{center}"])
    _write_csv(root / GROUND_TRUTH, ["image", *ISIC_CLASSES, "UNK"], truth)
    _write_csv(root / METADATA, ["image", "age_approx", "anatom_site_general", "lesion_id", "sex", "dataset"], metadata)
    _write_csv(root / SPLIT, ["image", "target", "center", "fold2"], folds)
    return root


def write_medmnist(path: str | Path, *, collection: str = "dermamnist", counts: Sequence[int] = (40, 10, 20), size: int = 28, seed: int = 0) -> Path:
    """Write a MedMNIST-like ``.npz`` at ``path``: ``{train,val,test}_images`` uint8 (N, size,
    size, 3) of lesions (3D collections: (N, size, size, size) volumes whose slices are grey
    lesions) and ``{train,val,test}_labels`` uint8 (N, 1), ``counts`` images per part, labels
    cycling over the collection's classes. Returns ``path``."""
    classes = NUM_CLASSES[collection]
    arrays = {}
    for part, (name, count) in enumerate(zip(("train", "val", "test"), counts)):
        images, labels = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, part, index])
            label = index % classes
            picture = draw_lesion(rng, size, label % len(CLASSES), site_look(0, 1))
            if collection.endswith("3d"):
                picture = np.repeat(picture.mean(-1).astype(np.uint8)[None], size, axis=0)
            images.append(picture)
            labels.append([label])
        arrays[f"{name}_images"] = np.stack(images)
        arrays[f"{name}_labels"] = np.array(labels, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


@DATASETS.register("synthetic_classes")
class SyntheticClassesDataset(GeneratedSites, ClassFoldersDataset):
    """Site ``folder`` (``site1`` ... ``site<num_sites>``) of the synthetic lesion set made by
    :func:`generate_class_sites` with the given parameters (None: its defaults), read by
    :class:`~siteflow.datasets.classification.folders.ClassFoldersDataset` (classes
    :data:`CLASSES`); generated into ``<root_path>/classes-<hash of parameters>`` on first use
    (see :class:`GeneratedSites`). Items: RGB images, see ``ClassificationDataset``.

    Args:
        folder: the site to read, ``"site1"`` to ``"site<num_sites>"``.
        num_sites: the sites generated (None: 3).
        classes: the class names, in label order (default :data:`CLASSES`).
        img_size: (H, W) the generated images are read at.
        **kwargs: the options of :class:`GeneratedSites` and of the folder layout.
    """

    kind = "classes"
    generator = staticmethod(generate_class_sites)
    cache_key_extra = {"classes_generator_version": CLASSES_GENERATOR_VERSION}

    def __init__(
        self,
        split: Split,
        *,
        folder: str = "site1",
        num_sites: int | None = None,
        classes: list[str] | None = None,
        img_size: tuple[int, ...] | None = (32, 32),
        **kwargs: Any,
    ) -> None:
        self.num_sites = num_sites
        super().__init__(split, folder=folder, classes=list(classes or CLASSES), img_size=img_size, **kwargs)

    @classmethod
    def _classes(cls, options: dict[str, Any]) -> tuple[str, ...]:
        return super()._classes({**options, "classes": options["classes"] or list(CLASSES)})

    def _generator_options(self) -> dict[str, Any]:
        return {"num_sites": self.num_sites}

    def _site_folders(self) -> list[str]:
        return [f"site{k}" for k in range(1, self.generation["num_sites"] + 1)]

    def _loader_options(self, data: Path) -> dict[str, Any]:
        return {"root_path": str(data / self.site)}
