"""Patch training: patches cut at native resolution, the foreground share of the patch sampler,
the seeded training loader (same seed, same batches; another epoch, other batches; as many
workers as you like), and the errors of bad patch options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siteflow.core.registry import DATASETS
from siteflow.datasets import DataError, DriveDataset, FundusDataset
from siteflow.datasets.pooling import loader
from siteflow.datasets.sampling import SeededConcatDataset, SeededSampler
from test_augmentation import write_drive

BACKGROUND, RIM, CUP = 255, 128, 0  # DoFE mask levels of classes 0, 1, 2


def write_domain(root: Path, images: dict[str, tuple[np.ndarray, np.ndarray]], part: str = "train") -> Path:
    """DoFE ``Domain1/<part>`` with ``name -> (image uint8 (H, W, 3), mask grey uint8 (H, W))``."""
    for name, (image, mask) in images.items():
        for folder, pixels in (("image", image), ("mask", mask)):
            (root / "Domain1" / part / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "Domain1" / part / folder / f"{name}.png")
    return root


def coordinates_image(height: int, width: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) whose red is the row and green the column of each pixel."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([rows, columns, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def position(item: dict) -> tuple[int, int]:
    """(row, column) of the top-left pixel of a patch of a :func:`coordinates_image` item."""
    pixels = np.round((item["image"].numpy() + 1) * 127.5).astype(int)
    return int(pixels[0, 0, 0]), int(pixels[1, 0, 0])


@pytest.fixture
def one_cup_pixel(tmp_path):
    """One 101x101 training image, background except one cup pixel at (50, 50)."""
    mask = np.full((101, 101), BACKGROUND, dtype=np.uint8)
    mask[50, 50] = CUP
    return write_domain(tmp_path / "one_cup_pixel", {"a": (coordinates_image(101, 101), mask)})


def contains_pixel(corner: tuple[int, int], patch: int, pixel: tuple[int, int]) -> bool:
    return all(c <= p < c + patch for c, p in zip(corner, pixel))


@pytest.mark.parametrize("share", [0.0, 1 / 3, 0.8, 1.0])
def test_foreground_share_within_tolerance_of_its_setting(one_cup_pixel, share):
    """A patch contains the one foreground pixel when it was centred on it (probability
    ``share``) or, placed uniformly, by chance: (11 / 91)^2 for an 11x11 patch in 101x101."""
    data = FundusDataset("train", root_path=str(one_cup_pixel), folder="Domain1", val_fraction=0.0, patch_size=[11, 11], foreground_share=share)
    draws = 3000
    hits = centred = 0
    for seed in range(draws):
        item = data[(0, seed)]
        corner = position(item)
        hits += contains_pixel(corner, 11, (50, 50))
        centred += corner == (45, 45)
        assert (item["label"] == 2).sum() == contains_pixel(corner, 11, (50, 50))  # the label came along
    by_chance = (11 / 91) ** 2
    expected = share + (1 - share) * by_chance
    tolerance = 4 * math.sqrt(expected * (1 - expected) / draws) + 1e-9
    assert abs(hits / draws - expected) <= tolerance, (hits / draws, expected)
    assert centred / draws >= share - 4 * math.sqrt(share * (1 - share) / draws) - 1e-9


def test_foreground_excludes_ignored_pixels_and_patches_stay_inside_the_image(tmp_path):
    """DRIVE-like: ignore index outside the FOV; a foreground pixel in a corner gives a patch
    shifted inside the image that still holds it."""
    label = np.full((40, 36), 255, dtype=np.int64)  # all ignored ...
    label[10:30, 8:28] = 0  # ... but a field of view
    label[11, 9] = 1  # one vessel pixel near the FOV's corner
    root = write_drive(tmp_path, [label])
    data = DriveDataset("train", root_path=str(root), fov_ignore_index=255, val_fraction=0.0, patch_size=[16, 16], foreground_share=1.0)
    for seed in range(50):
        item = data[(0, seed)]
        assert item["label"].shape == (16, 16)
        assert (item["label"] == 1).sum() == 1
    corner = np.zeros((40, 36), dtype=np.int64)
    corner[0, 0] = 1
    root = write_drive(tmp_path / "corner", [corner])
    data = DriveDataset("train", root_path=str(root), fov_ignore_index=255, val_fraction=0.0, patch_size=[16, 16], foreground_share=1.0)
    assert data[(0, 3)]["label"][0, 0] == 1  # the patch at the top-left corner


def test_patches_are_cut_at_native_resolution_or_after_resizing(tmp_path):
    mask = np.full((60, 80), BACKGROUND, dtype=np.uint8)
    mask[:, 40:] = RIM
    root = write_domain(tmp_path, {"a": (coordinates_image(60, 80), mask)})
    native = FundusDataset("train", root_path=str(root), folder="Domain1", val_fraction=0.0, patch_size=[20, 30])
    seen = set()
    for seed in range(40):
        item = native[(0, seed)]
        row, column = position(item)
        seen.add((row, column))
        assert 0 <= row <= 40 and 0 <= column <= 50  # inside the image
        pixels = np.round((item["image"].numpy() + 1) * 127.5).astype(int)
        assert (pixels[0] == np.arange(row, row + 20)[:, None]).all()  # native pixels, not resampled
        assert (pixels[1] == np.arange(column, column + 30)[None, :]).all()
        assert (item["label"].numpy() == (np.arange(column, column + 30) >= 40)[None, :]).all()
    assert len(seen) > 20
    centre = native[0]  # an int index: the patch at the image's centre
    assert position(centre) == (30 - 10, 40 - 15)

    resized = FundusDataset("train", root_path=str(root), folder="Domain1", val_fraction=0.0, img_size=[30, 40], patch_size=[10, 10])
    item = resized[(0, 1)]
    assert item["image"].shape == (3, 10, 10) and item["label"].shape == (10, 10)
    assert DATASETS.get("fundus").describe(root_path="x", folder="Domain1", img_size=[30, 40], patch_size=[10, 10]).patch_size == (10, 10)

    test = FundusDataset("test", root_path=str(write_domain(tmp_path, {"t": (coordinates_image(60, 80), mask)}, "test")), folder="Domain1", patch_size=[20, 30])
    assert test[0]["image"].shape == (3, 60, 80)  # evaluation reads whole images


def test_a_patch_larger_than_an_image_is_refused_naming_the_file_and_sizes(tmp_path):
    small = np.full((12, 50), BACKGROUND, dtype=np.uint8)
    root = write_domain(tmp_path, {"big": (coordinates_image(40, 50), np.full((40, 50), BACKGROUND, np.uint8)), "small": (coordinates_image(12, 50), small)})
    data = FundusDataset("train", root_path=str(root), folder="Domain1", val_fraction=0.0, patch_size=[16, 16])
    path = root / "Domain1" / "train" / "image" / "small.png"
    message = f"image {path} is 50x12 pixels (width x height), smaller than patch_size [16, 16] (height, width); lower patch_size or set img_size"
    with pytest.raises(DataError) as caught:
        data.check()
    assert message in str(caught.value) and caught.value.paths == (path,)
    with pytest.raises(DataError, match="smaller than patch_size"):
        data[(1, 0)]
    FundusDataset("train", root_path=str(root), folder="Domain1", val_fraction=0.0, patch_size=[16, 16], img_size=[20, 20]).check()
    FundusDataset("test", root_path=str(write_domain(tmp_path, {"s": (coordinates_image(12, 50), small)}, "test")), folder="Domain1", patch_size=[16, 16]).check()


@pytest.mark.parametrize(
    "options,message",
    [
        ({"patch_size": [64, 64], "img_size": [48, 64]}, "patch_size [64, 64] is larger than img_size [48, 64], the size every image is resized to"),
        ({"patch_size": [64]}, "patch_size must be [height, width] > 0, not [64]"),
        ({"patch_size": [0, 8]}, "patch_size must be [height, width] > 0, not [0, 8]"),
        ({"foreground_share": 1.5}, "foreground_share must be in [0, 1] (the share of patches centred on foreground), not 1.5"),
        ({"foreground_share": -0.1}, "foreground_share must be in [0, 1]"),
    ],
)
def test_bad_patch_options_are_one_clear_error(one_cup_pixel, options, message):
    with pytest.raises(ValueError) as caught:
        FundusDataset("train", root_path=str(one_cup_pixel), folder="Domain1", **options)
    assert message in str(caught.value)
    with pytest.raises(ValueError) as described:
        DATASETS.get("fundus").describe(root_path="x", folder="Domain1", **options)
    assert message in str(described.value)


# --- the seeded training loader ------------------------------------------------------------------


@pytest.fixture
def six_images(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for k in range(6):
        mask = np.where(rng.random((40, 48)) < 0.1, CUP, BACKGROUND).astype(np.uint8)
        images[f"i{k}"] = (rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), mask)
    return write_domain(tmp_path / "six_images", images)


def batches(data, *, seed: int, workers: int = 0, epochs: int = 2) -> list[list[dict]]:
    """Every batch of ``epochs`` epochs of the training loader of ``data``."""
    train = loader(data, batch_size=2, num_workers=workers, shuffle=True, seed=seed)
    return [list(train) for _ in range(epochs)]


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["id"] == y["id"] and torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b)
    )


def test_the_training_loader_repeats_from_its_seed_whatever_the_workers(six_images):
    data = FundusDataset("train", root_path=str(six_images), folder="Domain1", val_fraction=0.0, patch_size=[16, 16], augmentation="default")
    first = batches(data, seed=3)
    assert all(same(a, b) for a, b in zip(first, batches(data, seed=3)))
    assert not same(first[0], first[1]), "two epochs gave the same batches"
    assert not same(first[0], batches(data, seed=4)[0])
    with_workers = batches(data, seed=3, workers=2)
    assert all(same(a, b) for a, b in zip(first, with_workers))


def test_the_sampler_draws_the_order_and_one_seed_per_item_from_the_loader_generator(six_images):
    data = FundusDataset("train", root_path=str(six_images), folder="Domain1", val_fraction=0.0, patch_size=[16, 16])
    train = loader(data, batch_size=2, num_workers=0, shuffle=True, seed=5)
    assert isinstance(train.sampler, SeededSampler) and train.sampler.generator is train.generator
    state = train.generator.get_state()
    epoch = list(train.sampler)
    assert sorted(index for index, _ in epoch) == list(range(6)) and len({seed for _, seed in epoch}) == 6
    train.generator.set_state(state)  # what a resumed run does: the same epoch again
    assert list(train.sampler) == epoch


def test_pooled_sites_pass_item_seeds_to_their_site(six_images, one_cup_pixel):
    first = FundusDataset("train", root_path=str(six_images), folder="Domain1", val_fraction=0.0, patch_size=[11, 11])
    second = FundusDataset("train", root_path=str(one_cup_pixel), folder="Domain1", val_fraction=0.0, patch_size=[11, 11])
    pooled = SeededConcatDataset([first, second])
    assert pooled.takes_item_seeds and len(pooled) == 7
    assert torch.equal(pooled[(6, 9)]["image"], second[(0, 9)]["image"])
    assert torch.equal(pooled[(-1, 9)]["image"], second[(0, 9)]["image"])
    assert torch.equal(pooled[2]["image"], first[2]["image"])
    with pytest.raises(IndexError):
        pooled[(7, 0)]


def test_evaluation_loaders_batch_one_item_when_label_sizes_differ(tmp_path):
    mask = np.full((30, 40), BACKGROUND, dtype=np.uint8)
    images = {"a": (coordinates_image(30, 40), mask), "b": (coordinates_image(30, 40), mask)}
    even = FundusDataset("test", root_path=str(write_domain(tmp_path / "even", images, "test")), folder="Domain1", img_size=[16, 16])
    assert next(iter(loader(even, batch_size=2, num_workers=0, shuffle=False)))["label"].shape == (2, 30, 40)
    images["c"] = (coordinates_image(20, 40), mask[:20])
    mixed = FundusDataset("test", root_path=str(write_domain(tmp_path / "mixed", images, "test")), folder="Domain1", img_size=[16, 16])
    shapes = [tuple(batch["label"].shape) for batch in loader(mixed, batch_size=2, num_workers=0, shuffle=False)]
    assert shapes == [(1, 30, 40), (1, 30, 40), (1, 20, 40)]


def test_a_training_loader_over_images_of_several_sizes_is_refused_naming_them(tmp_path):
    mask = np.full((30, 40), BACKGROUND, dtype=np.uint8)
    images = {"a": (coordinates_image(30, 40), mask), "b": (coordinates_image(20, 40), mask[:20])}
    root = str(write_domain(tmp_path, images))
    native = FundusDataset("train", root_path=root, folder="Domain1", val_fraction=0.0)
    with pytest.raises(DataError, match=r"differ in size \(\[20, 40\], \[30, 40\]\) and cannot be batched by 2: set the dataset's patch_size"):
        loader(native, batch_size=2, num_workers=0, shuffle=True)
    assert next(iter(loader(native, batch_size=1, num_workers=0, shuffle=True)))["label"].shape[0] == 1
    resized = FundusDataset("train", root_path=root, folder="Domain1", val_fraction=0.0, img_size=[16, 16])
    assert next(iter(loader(resized, batch_size=2, num_workers=0, shuffle=True)))["label"].shape == (2, 16, 16)
