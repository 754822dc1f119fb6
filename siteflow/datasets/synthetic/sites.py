"""Synthetic multi-site data sets written in the real release layouts.

:func:`generate_fundus_sites` writes DoFE fundus domains, :func:`generate_vessel_sites`
writes one DRIVE, one STARE and one CHASE_DB1 site, so that the real loaders of
:mod:`siteflow.datasets` are what reads them. Each image comes from its own generator,
seeded by (seed, site, split, index): the files are byte-identical for equal arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from siteflow.datasets.synthetic.real_sites import REAL_VESSEL_SITES
from siteflow.datasets.synthetic.render import (
    Difficulty,
    Fundus,
    SiteDrawing,
    apply_style,
    draw_fundus,
    site_style,
)

RELEASES = ("train", "test")
# Native height / width of each vessel release, after which the synthetic sites are shaped.
VESSEL_ASPECTS = {"DRIVE": 584 / 565, "STARE": 605 / 700, "CHASE_DB1": 960 / 999}
VESSEL_PROFILES = ("demo", "real")
"""How the synthetic vessel sites look: ``demo``, small eyes in the sizes of ``native_size``;
``real``, each site as its release looks (:mod:`~siteflow.datasets.synthetic.real_sites`)."""
DEMO_VESSEL_SIZE = (96, 128)


@dataclass(frozen=True)
class Slot:
    """Where a sample goes: its release ("train" or "test"), its index there, and the
    numbers of train and test samples of its site (layouts number samples across both)."""

    release: str
    index: int
    train: int
    test: int

    @property
    def train_first(self) -> int:
        """0-based position when the train samples are numbered before the test ones."""
        return self.index + (self.train if self.release == "test" else 0)

    @property
    def test_first(self) -> int:
        """0-based position when the test samples are numbered before the train ones."""
        return self.index + (self.test if self.release == "train" else 0)


# A layout writer: (site folder, slot, picture uint8 (H, W, 3), drawn eye) -> writes the files.
Writer = Callable[[Path, Slot, np.ndarray, Fundus], None]


def generate_fundus_sites(
    root: str | Path,
    *,
    num_sites: int = 3,
    train_per_site: int = 40,
    test_per_site: int = 20,
    native_size: Sequence[int] = (64, 96),
    seed: int = 0,
) -> Path:
    """Write ``num_sites`` fundus domains in the DoFE layout and return ``root``:
    ``<root>/Domain{k}/{train,test}/{image,mask}/d{k}_{split}_{i:03d}.png``, images RGB, masks
    grey with 255 background, 128 optic disc rim, 0 optic cup. Site k's images are square,
    their side spread linearly over ``native_size`` = (first site, last site)."""
    root = Path(root)
    sites = {f"Domain{k + 1}": _write_dofe for k in range(num_sites)}
    drawings = [SiteDrawing(site_style(k, num_sites, (native_size[0], native_size[1]), 1.0)) for k in range(num_sites)]
    _write_sites(root, sites, drawings, train_per_site, test_per_site, seed)
    return root


def generate_vessel_sites(
    root: str | Path,
    *,
    train_per_site: int = 20,
    test_per_site: int = 10,
    native_size: Sequence[int] = DEMO_VESSEL_SIZE,
    seed: int = 0,
    vessel_width: float = 1.0,
    vessel_contrast: float = 1.0,
    texture: float = 0.0,
    site_shift: float = 0.0,
    profile: Literal["demo", "real"] = "demo",
) -> Path:
    """Write three vessel sites and return ``root``: ``<root>/DRIVE`` (tif images, gif
    annotations and FOV masks; test images numbered first, as DRIVE's 01-20), ``<root>/STARE``
    (ppm; the test images are the last ids) and ``<root>/CHASE_DB1`` (jpg images, png
    annotations; the test images are the last ids). Widths spread over ``native_size``,
    heights follow each release's aspect ratio. At most 99 images per site.

    ``vessel_width``, ``vessel_contrast`` and ``texture`` make the vessels harder to segment
    (see :class:`~siteflow.datasets.synthetic.render.Difficulty`; the defaults change nothing):
    e.g. 0.6, 0.6 and 0.25 at a native size of (288, 320) give thin, faint vessels on a
    blotchy retina. ``site_shift`` in [0, 1) makes the sites' vessels differ as the real
    releases' do (see :func:`shifted_difficulty`); 0: every site draws with the same difficulty.

    ``profile="real"`` draws each site as its release looks instead (see
    :mod:`~siteflow.datasets.synthetic.real_sites`): DRIVE 565 x 584 and STARE 700 x 605 with a
    field of view, CHASE_DB1 999 x 960 with wider, reflecting vessels on a darker, textured
    retina and a large black surround; vessels 1-13 pixels wide. ``native_size``,
    ``vessel_width``, ``vessel_contrast``, ``texture`` and ``site_shift`` shape the ``demo``
    profile only and must keep their defaults with ``real``."""
    if profile not in VESSEL_PROFILES:
        raise ValueError(f"profile must be one of {list(VESSEL_PROFILES)}, not {profile!r}")
    if train_per_site + test_per_site > 99:
        raise ValueError("the vessel layouts number at most 99 images per site")
    if not (vessel_width > 0 and 0 < vessel_contrast <= 1 and 0 <= texture < 1):
        raise ValueError(
            f"need vessel_width > 0, 0 < vessel_contrast <= 1 and 0 <= texture < 1, not {vessel_width}, {vessel_contrast}, {texture}"
        )
    if not 0 <= site_shift < 1:
        raise ValueError(f"need 0 <= site_shift < 1, not {site_shift}")
    root = Path(root)
    sites = {"DRIVE": _write_drive, "STARE": _write_stare, "CHASE_DB1": _write_chase}
    if profile == "real":
        demo_only = {"native_size": (tuple(native_size), DEMO_VESSEL_SIZE), "vessel_width": (vessel_width, 1.0),
                     "vessel_contrast": (vessel_contrast, 1.0), "texture": (texture, 0.0), "site_shift": (site_shift, 0.0)}  # fmt: skip
        changed = [name for name, (value, default) in demo_only.items() if value != default]
        if changed:
            raise ValueError(f"{', '.join(changed)} shape the demo profile only: with profile 'real' every site is drawn as its release looks")
        drawings = [REAL_VESSEL_SITES[folder] for folder in sites]
    else:
        difficulty = Difficulty(vessel_width, vessel_contrast, texture)
        drawings = [
            SiteDrawing(
                site_style(site, len(sites), (native_size[0], native_size[1]), VESSEL_ASPECTS[folder]),
                shifted_difficulty(difficulty, site, len(sites), site_shift),
            )
            for site, folder in enumerate(sites)
        ]
    _write_sites(root, sites, drawings, train_per_site, test_per_site, seed)
    return root


def shifted_difficulty(difficulty: Difficulty, site: int, num_sites: int, shift: float) -> Difficulty:
    """The difficulty of site ``site`` (0-based) of ``num_sites``: vessel width and contrast
    times ``1 + shift * p``, p going linearly from -1 (the first site) to 1 (the last), the
    contrast at most 1. With a shift the first site has the thinnest, faintest vessels and the
    last the widest, strongest, as DRIVE's and CHASE_DB1's differ at their native resolutions."""
    position = 2 * site / (num_sites - 1) - 1 if num_sites > 1 else 0.0
    scale = 1 + shift * position
    return replace(difficulty, vessel_width=difficulty.vessel_width * scale, vessel_contrast=min(1.0, difficulty.vessel_contrast * scale))


def _write_sites(
    root: Path, writers: dict[str, Writer], drawings: Sequence[SiteDrawing], train: int, test: int, seed: int
) -> None:
    """Draw and write every sample of every site (folder name -> layout writer), site k as
    ``drawings[k]`` says."""
    if train < 1 or test < 1:
        raise ValueError(f"need at least 1 train and 1 test image per site, not {train}, {test}")
    for site, ((folder, write), drawing) in enumerate(zip(writers.items(), drawings)):
        style = drawing.style
        for release_code, (release, count) in enumerate(zip(RELEASES, (train, test))):
            for index in range(count):
                rng = np.random.default_rng([seed, site, release_code, index])
                eye = draw_fundus(rng, style.height, style.width, drawing.difficulty, drawing.look)
                picture = apply_style(eye, style, rng)
                write(root / folder, Slot(release, index, train, test), picture, eye)


def _save(pixels: np.ndarray, path: Path, **options: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)


def _binary(mask: np.ndarray) -> np.ndarray:
    """uint8 (H, W): 255 where ``mask`` is true, else 0."""
    return np.where(mask, 255, 0).astype(np.uint8)


def _write_dofe(folder: Path, slot: Slot, picture: np.ndarray, eye: Fundus) -> None:
    mask = np.full(eye.disc.shape, 255, dtype=np.uint8)
    mask[eye.disc] = 128
    mask[eye.cup] = 0
    name = f"{folder.name.replace('Domain', 'd')}_{slot.release}_{slot.index:03d}.png"
    _save(picture, folder / slot.release / "image" / name)
    _save(mask, folder / slot.release / "mask" / name)


def _write_drive(folder: Path, slot: Slot, picture: np.ndarray, eye: Fundus) -> None:
    part = "training" if slot.release == "train" else "test"
    number = f"{slot.test_first + 1:02d}"
    _save(picture, folder / part / "images" / f"{number}_{part}.tif")
    _save(_binary(eye.vessels), folder / part / "1st_manual" / f"{number}_manual1.gif")
    _save(_binary(eye.fov), folder / part / "mask" / f"{number}_{part}_mask.gif")


def _write_stare(folder: Path, slot: Slot, picture: np.ndarray, eye: Fundus) -> None:
    stem = f"im{slot.train_first + 1:04d}"
    label_rgb = np.repeat(_binary(eye.vessels)[..., None], 3, axis=-1)
    _save(picture, folder / "stare-images" / f"{stem}.ppm")
    _save(label_rgb, folder / "labels-ah" / f"{stem}.ah.ppm")


def _write_chase(folder: Path, slot: Slot, picture: np.ndarray, eye: Fundus) -> None:
    stem = f"Image_{slot.train_first // 2 + 1:02d}{'LR'[slot.train_first % 2]}"
    _save(picture, folder / f"{stem}.jpg", quality=95)
    _save(_binary(eye.vessels), folder / f"{stem}_1stHO.png")
