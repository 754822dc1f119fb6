"""The harder synthetic vessel sites of relay's benchmark: thinner, fainter vessels on a
textured retina, sites whose vessels differ, the defaults unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siteflow.datasets.synthetic import SyntheticVesselsDataset, generate_vessel_sites
from siteflow.datasets.synthetic.render import Difficulty
from siteflow.datasets.synthetic.sites import shifted_difficulty

SMALL = dict(train_per_site=1, test_per_site=1, native_size=(64, 72))
DRIVE_IMAGE = Path("DRIVE/training/images/02_training.tif")
DRIVE_MASK = Path("DRIVE/training/1st_manual/02_manual1.gif")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(float)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vessels")
    settings = {
        "default": {},
        "explicit_defaults": {"vessel_width": 1.0, "vessel_contrast": 1.0, "texture": 0.0, "site_shift": 0.0},
        "thin": {"vessel_width": 0.5},
        "faint": {"vessel_contrast": 0.5},
        "textured": {"texture": 0.3},
        "shifted": {"vessel_contrast": 0.6, "site_shift": 0.5},
        "unshifted": {"vessel_contrast": 0.6},
    }
    return {name: generate_vessel_sites(root / name, **SMALL, **options) for name, options in settings.items()}


# SHA-256 of the pixels that the generator drew before the difficulty options existed
BEFORE = {
    DRIVE_IMAGE: "9bcd8c553b72d76619da2a1a153ac17138c57a4783097d9009f5e6b52fdd60b2",
    DRIVE_MASK: "3cb6443a16fb0170d6c7f96471bdb28bbfa7b5395f06e80857086c1d0b324edd",
}


def test_the_defaults_draw_what_they_drew(variants):
    for path, digest in BEFORE.items():
        for name in ("default", "explicit_defaults"):
            drawn = np.ascontiguousarray(np.asarray(Image.open(variants[name] / path)))
            assert hashlib.sha256(drawn.tobytes()).hexdigest() == digest, (name, path)


def test_thinner_vessels_cover_less_of_the_same_tree(variants):
    default, thin = pixels(variants["default"] / DRIVE_MASK) > 0, pixels(variants["thin"] / DRIVE_MASK) > 0
    assert thin.mean() < 0.8 * default.mean()
    assert (thin & ~default).mean() < 0.1 * thin.mean()  # mostly inside the default's vessels


def test_fainter_vessels_darken_less_and_texture_leaves_the_masks_alone(variants):
    vessels = pixels(variants["default"] / DRIVE_MASK) > 0
    default, faint = pixels(variants["default"] / DRIVE_IMAGE), pixels(variants["faint"] / DRIVE_IMAGE)
    assert faint[vessels].mean() > default[vessels].mean() + 5  # less darkening, same background
    textured = pixels(variants["textured"] / DRIVE_IMAGE)
    assert np.array_equal(pixels(variants["textured"] / DRIVE_MASK) > 0, vessels)
    assert np.abs(textured - default)[~vessels].mean() > 5


def test_the_dataset_takes_the_difficulty_as_options(tmp_path):
    data = SyntheticVesselsDataset("train", root_path=str(tmp_path), folder="STARE", img_size=[32, 32], texture=0.3, **SMALL)
    assert data.generation["texture"] == 0.3 and data.generation["vessel_width"] == 1.0
    with pytest.raises(ValueError, match="0 <= texture < 1"):
        SyntheticVesselsDataset("train", root_path=str(tmp_path), folder="STARE", texture=1.5, **SMALL)


@pytest.mark.parametrize(
    "site, expected",
    [(0, Difficulty(0.3, 0.3, 0.2)), (1, Difficulty(0.6, 0.6, 0.2)), (2, Difficulty(0.9, 0.9, 0.2))],
)
def test_a_site_shift_scales_width_and_contrast_from_the_first_site_to_the_last(site, expected):
    shifted = shifted_difficulty(Difficulty(0.6, 0.6, 0.2), site, 3, 0.5)  # times 0.5, 1, 1.5
    assert shifted.vessel_width == pytest.approx(expected.vessel_width)
    assert shifted.vessel_contrast == pytest.approx(expected.vessel_contrast) and shifted.texture == expected.texture
    assert shifted_difficulty(Difficulty(1.0, 0.8, 0.0), 2, 3, 0.5).vessel_contrast == 1.0  # capped


def test_shifted_sites_draw_thin_vessels_first_and_wide_ones_last(variants):
    def vessel_share(name: str, site: str, masks: str) -> float:
        return float(np.mean([(pixels(path) > 0).mean() for path in (variants[name] / site).rglob(masks)]))

    # the middle site is drawn as without a shift; the first site's vessels cover less, the last's more
    stare = sorted((variants["shifted"] / "STARE").rglob("*.ah.ppm"))
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(stare, sorted((variants["unshifted"] / "STARE").rglob("*.ah.ppm"))))
    assert stare and vessel_share("shifted", "DRIVE", "*manual1.gif") < 0.8 * vessel_share("unshifted", "DRIVE", "*manual1.gif")
    assert vessel_share("shifted", "CHASE_DB1", "*1stHO.png") > 1.2 * vessel_share("unshifted", "CHASE_DB1", "*1stHO.png")
    with pytest.raises(ValueError, match=r"need 0 <= site_shift < 1, not 1.0"):
        generate_vessel_sites(variants["shifted"].parent / "refused", site_shift=1.0, **SMALL)
