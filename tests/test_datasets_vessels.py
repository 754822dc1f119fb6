"""DRIVE, STARE and CHASE_DB1 loaders, reading files written by the synthetic generator."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siteflow.datasets import ChaseDataset, DriveDataset, StareDataset, generate_vessel_sites
from siteflow.core.registry import DATASETS


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Three sites of 4 train + 2 test images; widths 40, 48, 56 (DRIVE, STARE, CHASE_DB1)."""
    root = tmp_path_factory.mktemp("vessels")
    return generate_vessel_sites(root, train_per_site=4, test_per_site=2, native_size=(40, 56))


def check_items(data, shape):
    for item in (data[i] for i in range(len(data))):
        assert item["image"].shape == (3, *shape)
        assert item["label"].shape == shape
        assert set(item["label"].unique().tolist()) == {0, 1}


def test_drive(release):
    root = str(release / "DRIVE")
    test = DriveDataset("test", root_path=root)
    assert (test.num_classes, test.in_channels) == (2, 3)
    assert test.class_names == ("background", "vessel")
    assert test.sample_ids == ["01_test", "02_test"]
    train = DriveDataset("train", root_path=root, val_fraction=0.0)
    assert train.sample_ids == ["03_training", "04_training", "05_training", "06_training"]
    check_items(train, (41, 40))  # 40 * 584 / 565 = 41.3
    resized = DriveDataset("train", root_path=root, img_size=[32, 24])[0]
    assert resized["image"].shape == (3, 32, 24) and resized["label"].shape == (32, 24)
    # evaluation: the image at the model's input size, the label at the image's native size
    evaluated = DriveDataset("test", root_path=root, img_size=[32, 24])[0]
    assert evaluated["image"].shape == (3, 32, 24) and evaluated["label"].shape == (41, 40)


def test_drive_fov_ignore_index(release):
    root = release / "DRIVE"
    plain = DriveDataset("test", root_path=str(root))[0]["label"]
    label = DriveDataset("test", root_path=str(root), fov_ignore_index=255)[0]["label"].numpy()
    fov = np.asarray(Image.open(root / "test" / "mask" / "01_test_mask.gif").convert("L")) > 127
    assert 0 < (~fov).sum() < fov.size
    assert (label[~fov] == 255).all()
    assert np.array_equal(label[fov], plain.numpy()[fov])
    assert label[0, 0] == 255  # a corner lies outside the circular field of view


def test_drive_missing_fov_mask_is_named_only_when_used(release, tmp_path):
    root = shutil.copytree(release / "DRIVE", tmp_path / "DRIVE")
    (root / "test" / "mask" / "02_test_mask.gif").unlink()
    assert len(DriveDataset("test", root_path=str(root))) == 2
    missing = r"no FOV mask for image .*02_test\.tif: .*02_test_mask\.gif"
    with pytest.raises(FileNotFoundError, match=missing):
        DriveDataset("test", root_path=str(root), fov_ignore_index=-100)


def test_stare_split_options(release):
    root = str(release / "STARE")
    assert StareDataset("test", root_path=root, num_test=2).sample_ids == ["im0005", "im0006"]
    custom = dict(root_path=root, test_ids=["im0001", "im0004"], val_fraction=0.0)
    assert StareDataset("test", **custom).sample_ids == ["im0001", "im0004"]
    assert StareDataset("train", **custom).sample_ids == ["im0002", "im0003", "im0005", "im0006"]
    with pytest.raises(ValueError, match=r"test_ids \['im0099'\] are not samples of .*STARE"):
        StareDataset("test", root_path=root, test_ids=["im0099"])
    with pytest.raises(ValueError, match=r"num_test=10 must be between 1 and 5"):
        StareDataset("test", root_path=root)  # the default (10) needs the 20 real images


def test_stare_items_and_fov_option_ignores_nothing(release):
    data = StareDataset("train", root_path=str(release / "STARE"), num_test=2, fov_ignore_index=255)
    check_items(data, (41, 48))  # 48 * 605 / 700 = 41.5


def test_stare_missing_annotation_is_named(release, tmp_path):
    root = shutil.copytree(release / "STARE", tmp_path / "STARE")
    (root / "labels-ah" / "im0002.ah.ppm").unlink()
    missing = r"no annotation for image .*im0002\.ppm: .*im0002\.ah\.ppm"
    with pytest.raises(FileNotFoundError, match=missing):
        StareDataset("train", root_path=str(root), num_test=2)


def test_chase(release, tmp_path):
    root = shutil.copytree(release / "CHASE_DB1", tmp_path / "CHASE_DB1")
    Image.new("L", (56, 54)).save(root / "Image_01L_2ndHO.png")  # ignored
    test = ChaseDataset("test", root_path=str(root), num_test=2)
    assert test.sample_ids == ["Image_03L", "Image_03R"]
    train = ChaseDataset("train", root_path=str(root), num_test=2, val_fraction=0.0)
    assert train.sample_ids == ["Image_01L", "Image_01R", "Image_02L", "Image_02R"]
    check_items(train, (54, 56))  # 56 * 960 / 999 = 53.8
    with pytest.raises(ValueError, match=r"num_test=8 must be between 1 and 5"):
        ChaseDataset("test", root_path=str(root))


def test_registered_with_required_root():
    registered = {"drive": DriveDataset, "stare": StareDataset, "chase_db1": ChaseDataset}
    for name, cls in registered.items():
        assert DATASETS.get(name) is cls
        assert cls.required_paths(root_path="/data/x") == {"root_path": Path("/data/x")}


@pytest.mark.parametrize("value", [0, 1])
def test_a_fov_ignore_index_that_is_a_class_id_is_refused_naming_the_option(release, value):
    # 0 would ignore every background pixel in the metrics, 1 would label outside the FOV as vessel
    with pytest.raises(ValueError, match=f"fov_ignore_index {value} is the id of class"):
        DriveDataset.describe(root_path=str(release / "DRIVE"), fov_ignore_index=value)
    with pytest.raises(ValueError, match="fov_ignore_index"):
        DriveDataset("test", root_path=str(release / "DRIVE"), fov_ignore_index=value)
    assert DriveDataset.describe(root_path=str(release / "DRIVE"), fov_ignore_index=255).ignore_index == 255
