"""The DoFE fundus loader on small hand-made domains."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from siteflow.datasets import DataError, FundusDataset
from siteflow.core.registry import DATASETS

# A 4x5 mask with resampling noise, in the DoFE convention, and its class ids.
MASK = np.array(
    [
        [255, 255, 128, 0, 0],
        [250, 130, 120, 5, 12],
        [255, 230, 140, 100, 0],
        [255, 255, 255, 255, 255],
    ],
    dtype=np.uint8,
)
IDS = [[0, 0, 1, 2, 2], [0, 1, 1, 2, 2], [0, 0, 1, 1, 2], [0, 0, 0, 0, 0]]


def write_pair(part: Path, name: str, mask: np.ndarray = MASK, rgb_mask: bool = False) -> None:
    """An image whose first pixel is (0, 255, 51) and its mask, under part/{image,mask}."""
    image = np.zeros(mask.shape + (3,), dtype=np.uint8)
    image[0, 0] = (0, 255, 51)
    for folder, pixels in (("image", image), ("mask", mask)):
        (part / folder).mkdir(parents=True, exist_ok=True)
        if folder == "mask" and rgb_mask:
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        Image.fromarray(pixels).save(part / folder / name)


@pytest.fixture
def domain(tmp_path):
    """Domain1 with 10 train and 2 test images (full and ROIs), masks stored RGB in train."""
    for roi in ("", "ROIs"):
        for i in range(10):
            write_pair(tmp_path / "Domain1" / "train" / roi, f"tr{i}{roi}.png", rgb_mask=True)
        for i in range(2):
            write_pair(tmp_path / "Domain1" / "test" / roi, f"te{i}{roi}.png")
    return tmp_path


def test_item_contents(domain):
    data = FundusDataset("test", root_path=str(domain), folder="Domain1")
    assert (data.num_classes, data.in_channels) == (3, 3)
    assert data.class_names == ("background", "disc_rim", "optic_cup")
    assert data.sample_ids == ["te0", "te1"]
    item = data[1]
    assert item["id"] == "te1"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 4, 5)
    assert item["image"][:, 0, 0].tolist() == pytest.approx([-1.0, 1.0, -0.6])
    assert item["label"].dtype == torch.int64 and item["label"].tolist() == IDS


def test_rgb_masks_and_out_range(domain):
    data = FundusDataset("train", root_path=str(domain), folder="Domain1", out_range=(0.0, 1.0))
    item = data[0]
    assert item["label"].tolist() == IDS
    assert item["image"][:, 0, 0].tolist() == pytest.approx([0.0, 1.0, 0.2])


def test_rois_subfolder(domain):
    data = FundusDataset("test", root_path=str(domain), folder="Domain1", use_roi=True)
    assert data.sample_ids == ["te0ROIs", "te1ROIs"]


def test_resize_keeps_valid_ids(domain):
    data = FundusDataset("train", root_path=str(domain), folder="Domain1", img_size=[8, 10])
    item = data[0]
    assert item["image"].shape == (3, 8, 10)
    assert item["label"].tolist() == np.repeat(np.repeat(IDS, 2, axis=0), 2, axis=1).tolist()
    small = FundusDataset("train", root_path=str(domain), folder="Domain1", img_size=[3, 3])[0]
    assert small["label"].shape == (3, 3)
    assert set(small["label"].unique().tolist()) <= {0, 1, 2}


def test_evaluation_labels_keep_the_native_size(domain):
    for split in ("val", "test"):
        item = FundusDataset(split, root_path=str(domain), folder="Domain1", img_size=[8, 10])[0]
        assert item["image"].shape == (3, 8, 10)
        assert item["label"].tolist() == IDS


def test_val_split_is_disjoint_deterministic_and_complete(domain):
    def ids(split, seed=0):
        kwargs = dict(root_path=str(domain), folder="Domain1", split_seed=seed)
        return FundusDataset(split, **kwargs).sample_ids

    train, val = ids("train"), ids("val")
    assert (len(train), len(val)) == (8, 2)
    assert sorted(train + val) == sorted(f"tr{i}" for i in range(10))
    assert ids("train") == train and ids("val") == val
    assert len({tuple(ids("val", seed)) for seed in range(5)}) > 1
    assert not set(ids("test")) & set(train + val)


def test_num_replica_repeats_train_only(domain):
    kwargs = dict(root_path=str(domain), folder="Domain1", num_replica=3)
    train = FundusDataset("train", **kwargs)
    assert (train.num_samples, len(train)) == (8, 24)
    assert train[1]["id"] == train[9]["id"] == train[17]["id"] == train.sample_ids[1]
    with pytest.raises(IndexError):
        train[24]
    val = FundusDataset("val", **kwargs)
    assert (val.num_samples, len(val)) == (2, 2)


def test_batches_through_a_dataloader(domain):
    data = FundusDataset("train", root_path=str(domain), folder="Domain1")
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 4, 5) and batch["label"].shape == (4, 4, 5)
    assert batch["id"] == data.sample_ids[:4]


def test_required_paths():
    assert FundusDataset.required_paths(root_path="/data/fundus", folder="Domain2") == {
        "root_path": Path("/data/fundus"),
        "folder": Path("/data/fundus/Domain2"),
    }
    assert FundusDataset.required_paths(folder="Domain2") == {}


def test_registered():
    assert DATASETS.get("fundus") is FundusDataset


def test_missing_mask_is_named(domain):
    (domain / "Domain1" / "train" / "mask" / "tr3.png").unlink()
    missing = r"no mask for image .*/image/tr3\.png: .*/mask/tr3\.png"
    with pytest.raises(FileNotFoundError, match=missing):
        FundusDataset("train", root_path=str(domain), folder="Domain1")


def test_mask_with_another_suffix_is_found(domain):
    masks = domain / "Domain1" / "test" / "mask"
    (masks / "te0.png").rename(masks / "te0.bmp")
    data = FundusDataset("test", root_path=str(domain), folder="Domain1")
    assert data[0]["label"].tolist() == IDS


def test_missing_or_empty_folders_are_named(domain):
    missing = r"image folder .*Domain7/train/image does not exist"
    with pytest.raises(FileNotFoundError, match=missing):
        FundusDataset("train", root_path=str(domain), folder="Domain7")
    (domain / "Empty" / "test" / "image").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images .* in .*Empty/test/image"):
        FundusDataset("test", root_path=str(domain), folder="Empty")


def test_bad_masks_are_named(domain):
    part = domain / "Domain1" / "test"
    write_pair(part, "te0.png", mask=np.array(IDS, dtype=np.uint8))
    data = FundusDataset("test", root_path=str(domain), folder="Domain1")
    with pytest.raises(ValueError, match=r"mask .*te0\.png holds only the values \[0, 1, 2\]"):
        data[0]
    Image.fromarray(MASK[:3]).save(part / "mask" / "te1.png")
    mismatch = r"mask .*te1\.png is 5x3 pixels but image .*te1\.png is 5x4"
    with pytest.raises(ValueError, match=mismatch):
        data[1]


def test_empty_val_split_and_bad_options(domain):
    kwargs = dict(root_path=str(domain), folder="Domain1")
    with pytest.raises(DataError, match=r"FundusDataset: the val split is empty: \d+ training sample\(s\) with val_fraction=0.0 "
                       r"leave none for it; give the site more images or change the dataset option val_fraction"):
        FundusDataset("val", val_fraction=0.0, **kwargs)
    with pytest.raises(ValueError, match="split must be one of"):
        FundusDataset("validation", **kwargs)
    with pytest.raises(ValueError, match="img_size"):
        FundusDataset("test", img_size=[64], **kwargs)
    with pytest.raises(ValueError, match="num_replica"):
        FundusDataset("train", num_replica=0, **kwargs)
