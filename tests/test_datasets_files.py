"""Mask decoding, resizing, listing and split selection of siteflow.datasets."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siteflow.datasets.files import (
    find_same_stem,
    grey_to_class_ids,
    list_images,
    resize_nearest,
)
from siteflow.datasets.splits import carve_val, fixed_test_split, val_count

DOFE_LEVELS = (255, 128, 0)


def test_nearest_level_decoding_of_a_noisy_dofe_mask():
    grey = np.array(
        [
            [255, 255, 128, 0, 0],
            [250, 130, 120, 5, 12],
            [255, 230, 140, 100, 0],
            [255, 255, 255, 255, 255],
        ],
        dtype=np.uint8,
    )
    expected = [[0, 0, 1, 2, 2], [0, 1, 1, 2, 2], [0, 0, 1, 1, 2], [0, 0, 0, 0, 0]]
    ids = grey_to_class_ids(grey, DOFE_LEVELS, Path("m.png"))
    assert ids.dtype == np.int64
    assert ids.tolist() == expected


def test_mask_of_class_ids_is_refused():
    grey = np.array([[0, 1, 2], [0, 0, 1]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"m\.png holds only the values \[0, 1, 2\].*class ids"):
        grey_to_class_ids(grey, DOFE_LEVELS, Path("m.png"))


def test_mask_with_many_values_far_from_every_level_is_refused():
    # 76 and 200 are more than 127 / 4 from 0, 128 and 255: 2 of 4 pixels fit no class.
    grey = np.array([[255, 76], [200, 128]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"odd\.png: 50% of the pixels fit no class.*\[76, 200\]"):
        grey_to_class_ids(grey, DOFE_LEVELS, Path("odd.png"))


def test_binary_levels():
    grey = np.array([[0, 255, 200, 40]], dtype=np.uint8)
    assert grey_to_class_ids(grey, (0, 255), Path("v.gif")).tolist() == [[0, 1, 1, 0]]


def test_resize_nearest_copies_values():
    labels = np.array([[0, 1], [2, -100]], dtype=np.int64)
    assert resize_nearest(labels, (4, 4)).tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, -100, -100],
        [2, 2, -100, -100],
    ]
    # Downsizing 4 -> 2: output centres 0.5 and 1.5 map to input 1.0 and 3.0, rows/cols 1 and 3.
    assert resize_nearest(np.arange(16).reshape(4, 4), (2, 2)).tolist() == [[5, 7], [13, 15]]
    assert resize_nearest(labels, (3, 5)).shape == (3, 5)


def test_listing_sorts_and_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder .*nothing does not exist"):
        list_images(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=rf"no images matching '\*' in {tmp_path}"):
        list_images(tmp_path)
    for name in ("b.png", "a.png", "c.jpg"):
        Image.new("L", (2, 2)).save(tmp_path / name)
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png", "c.jpg"]
    assert [p.name for p in list_images(tmp_path, "*.png")] == ["a.png", "b.png"]


def test_partner_with_the_same_name_or_stem(tmp_path):
    masks = tmp_path / "mask"
    masks.mkdir()
    Image.new("L", (2, 2)).save(masks / "a.png")
    Image.new("L", (2, 2)).save(masks / "b.bmp")
    assert find_same_stem(Path("image/a.png"), masks, "mask") == masks / "a.png"
    assert find_same_stem(Path("image/b.png"), masks, "mask") == masks / "b.bmp"
    with pytest.raises(FileNotFoundError, match=r"no mask for image image/c\.png: .*mask/c\.png"):
        find_same_stem(Path("image/c.png"), masks, "mask")


@pytest.mark.parametrize(
    ("total", "fraction", "expected"),
    [(10, 0.2, 2), (5, 0.2, 1), (3, 0.2, 1), (7, 0.5, 4), (2, 0.9, 1), (1, 0.2, 0), (10, 0.0, 0)],
)
def test_val_count(total, fraction, expected):
    assert val_count(total, fraction) == expected


def test_val_carving_is_deterministic_disjoint_and_complete():
    items = [f"s{i:02d}" for i in range(10)]
    val = carve_val(items, "val", 0.2, seed=0)
    train = carve_val(items, "train", 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert not set(val) & set(train)
    assert sorted(val + train) == items
    assert train == sorted(train) and val == sorted(val)  # input order kept
    assert carve_val(items, "val", 0.2, seed=0) == val
    assert len({tuple(carve_val(items, "val", 0.2, seed=s)) for s in range(5)}) > 1


def test_fixed_test_split():
    ids = ["a", "b", "c", "d", "e"]
    assert fixed_test_split(ids, "test", None, 2, "here") == ["d", "e"]
    assert fixed_test_split(ids, "train", None, 2, "here") == ["a", "b", "c"]
    assert fixed_test_split(ids, "test", ["e", "a"], 2, "here") == ["a", "e"]
    assert fixed_test_split(ids, "train", ["e", "a"], 2, "here") == ["b", "c", "d"]
    with pytest.raises(ValueError, match=r"test_ids \['x'\] are not samples of here"):
        fixed_test_split(ids, "test", ["x", "a"], 2, "here")
    with pytest.raises(ValueError, match="num_test=5 must be between 1 and 4"):
        fixed_test_split(ids, "test", None, 5, "here")
