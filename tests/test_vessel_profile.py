"""The ``real`` profile of the synthetic vessel sites: each site at its release's size and
look (the proxy of DRIVE, STARE and CHASE_DB1 on which federated training is measured)."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from siteflow.datasets import SyntheticVesselsDataset, generate_vessel_sites
from siteflow.datasets.synthetic.real_sites import REAL_VESSEL_SITES
from siteflow.datasets.synthetic.render import draw_fundus


def wide_and_thin(vessels: np.ndarray) -> tuple[float, float]:
    """The width of the widest vessels (the 99th percentile of twice the distance to the
    background on the centre lines, in pixels) and the share of centre-line pixels on
    vessels at most 2 pixels wide."""
    distance = ndimage.distance_transform_edt(vessels)
    centre = vessels & (distance >= ndimage.maximum_filter(distance, size=3))
    widths = 2 * distance[centre] - 1
    return float(np.percentile(widths, 99)), float((widths <= 2).mean())


def test_the_real_profile_refuses_the_demo_options(tmp_path):
    with pytest.raises(ValueError, match="native_size, texture shape the demo profile only"):
        generate_vessel_sites(tmp_path, profile="real", native_size=(64, 64), texture=0.2)
    with pytest.raises(ValueError, match="profile must be one of \\['demo', 'real'\\], not 'chase'"):
        generate_vessel_sites(tmp_path, profile="chase")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_each_real_site_is_drawn_at_its_native_size_with_its_vessels_and_surround():
    found = {}
    for folder, drawing in REAL_VESSEL_SITES.items():
        style = drawing.style
        eye = draw_fundus(np.random.default_rng([0, 1]), style.height, style.width, drawing.difficulty, drawing.look)
        widest, thin_share = wide_and_thin(eye.vessels)
        found[folder] = (eye.image.shape[:2], 1 - eye.fov.mean(), widest, thin_share, eye.vessels[eye.fov].mean(), eye.image[eye.fov].mean())
    assert [size for size, *_ in found.values()] == [(584, 565), (605, 700), (960, 999)]
    surround = {folder: values[1] for folder, values in found.items()}
    assert surround["CHASE_DB1"] > 0.45 > surround["DRIVE"] > surround["STARE"] > 0.1  # CHASE_DB1: a large black surround
    for folder, (_, _, widest, thin_share, vessel_share, _) in found.items():
        assert 0.05 < vessel_share < 0.2, folder  # DRIVE's annotations cover about 12% of the FOV
        assert thin_share > 0.2, folder  # capillaries of 1-2 pixels
    assert 5 <= found["DRIVE"][2] <= 9 and found["CHASE_DB1"][2] >= found["DRIVE"][2] + 2  # wider vessels in CHASE_DB1
    assert found["CHASE_DB1"][5] < 0.75 * found["DRIVE"][5]  # on a darker retina


@pytest.mark.slow
def test_the_real_profile_is_read_by_the_release_readers(tmp_path):
    options = dict(root_path=str(tmp_path), train_per_site=2, test_per_site=1, profile="real")
    drive = SyntheticVesselsDataset("test", folder="DRIVE", fov_ignore_index=255, **options)
    chase = SyntheticVesselsDataset("train", folder="CHASE_DB1", val_fraction=0.0, **options)
    assert drive[0]["image"].shape == (3, 584, 565) and chase[0]["image"].shape == (3, 960, 999)
    assert (drive[0]["label"] == 255).float().mean() > 0.25  # DRIVE's FOV mask is written and read
    assert set(chase[0]["label"].unique().tolist()) == {0, 1}  # CHASE_DB1: no FOV mask
    (generated,) = [p for p in tmp_path.iterdir() if p.name.startswith("vessels-")]
    picture = np.asarray(Image.open(generated / "CHASE_DB1" / "Image_01L.jpg"))
    assert picture.shape == (960, 999, 3) and picture[:40, :40].mean() < 10
