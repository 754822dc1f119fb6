"""Augmentation: image and label move together (the label painted into the image stays under
the label after every transform of every preset), labels stay valid class ids (ignored pixels
kept, pixels from outside the image ignored), items repeat from their seed, and bad options
are refused with one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siteflow.core.registry import DATASETS
from siteflow.datasets import DriveDataset
from siteflow.datasets.augmentation import PRESETS, TRANSFORMS, Augmentation, resolve_steps

IGNORE = 255
SIZE = (48, 40)  # height, width of the test images


def vessel_label(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Class ids (H, W): a few vessel bars (1), background (0), and IGNORE outside a disc."""
    height, width = size
    label = np.zeros(size, dtype=np.int64)
    for _ in range(4):
        row, column = rng.integers(4, height - 8), rng.integers(4, width - 8)
        label[row : row + 3, column : column + rng.integers(4, 12)] = 1
    y, x = np.mgrid[0:height, 0:width]
    label[(y - height / 2) ** 2 + (x - width / 2) ** 2 > (min(size) / 2) ** 2] = IGNORE
    return label


def painted(label: np.ndarray) -> np.ndarray:
    """The label painted into an RGB image uint8 (H, W, 3): red = vessel, green = ignored."""
    image = np.zeros((*label.shape, 3), dtype=np.uint8)
    image[..., 0] = 255 * (label == 1)
    image[..., 1] = 255 * (label == IGNORE)
    image[..., 2] = 90  # a flat third channel, so that intensity steps have something to change
    return image


def assert_aligned(image: np.ndarray, label: np.ndarray) -> None:
    """The painting of ``image`` (H, W, 3) agrees with ``label`` (H, W) at every pixel: vessels
    red, background neither red nor green; ignored pixels are not red (green where the image
    was ignored before, black where the transform brought them in from outside)."""
    red, green = image[..., 0], image[..., 1]
    assert set(np.unique(label).tolist()) <= {0, 1, IGNORE}
    assert (red[label == 1] == 255).all() and (green[label == 1] == 0).all()
    assert (red[label == 0] == 0).all() and (green[label == 0] == 0).all()
    assert (red[label == IGNORE] == 0).all()


def nearest_step(name: str, kwargs: dict) -> dict:
    """Step ``name`` forced to fire (p = 1), its image resampled by nearest neighbour where it
    resamples, so that image and label must agree exactly."""
    allowed = TRANSFORMS[name].allowed
    forced = {**kwargs, "p": 1.0}
    if "interpolation" in allowed:
        forced["interpolation"] = 0  # cv2.INTER_NEAREST
    return {"name": name, "kwargs": forced}


PRESET_STEPS = [(preset, index) for preset, steps in PRESETS.items() for index in range(len(steps))]


@pytest.mark.parametrize("preset,index", PRESET_STEPS, ids=[f"{p}-{i}-{PRESETS[p][i]['name']}" for p, i in PRESET_STEPS])
def test_every_step_of_every_preset_keeps_image_and_label_aligned(preset, index):
    step = PRESETS[preset][index]
    augmentation = Augmentation([nearest_step(step["name"], step["kwargs"])], in_channels=3, num_classes=2, ignore_index=IGNORE)
    spatial = TRANSFORMS[step["name"]].kind == "spatial"
    changed = 0
    for seed in range(6):
        label = vessel_label(np.random.default_rng(seed))
        image, moved = augmentation(painted(label), label, np.random.default_rng(100 + seed))
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        assert moved.shape == SIZE and moved.dtype == np.int64
        if spatial:
            assert_aligned(image, moved)
            changed += not np.array_equal(moved, label)
        else:  # intensity and colour steps change the image only
            assert np.array_equal(moved, label)
            changed += not np.array_equal(image, painted(label))
    assert changed >= 3, "the step (forced to fire) left most images unchanged"


def test_rotation_fills_the_label_outside_the_image_with_the_ignore_index_or_background():
    label = np.zeros(SIZE, dtype=np.int64)
    label[20:28, 10:30] = 1
    rotate = [{"name": "rotate", "kwargs": {"limit": [45, 45], "p": 1.0, "interpolation": 0}}]
    for ignore, fill in ((IGNORE, IGNORE), (None, 0)):
        augmentation = Augmentation(rotate, in_channels=3, num_classes=2, ignore_index=ignore)
        image, moved = augmentation(painted(label), label, np.random.default_rng(0))
        corner = moved[0, 0], image[0, 0].tolist()
        assert corner == (fill, [0, 0, 0]), "a corner rotated in from outside the image"
        assert set(np.unique(moved).tolist()) == {0, 1, fill}


def test_items_of_the_default_preset_through_a_dataset_stay_aligned(tmp_path):
    """The dataset's own path: native-resolution patches cut from a window that the spatial
    steps move, on DRIVE files with a FOV mask (ignore index 255)."""
    labels = [vessel_label(np.random.default_rng(seed), (64, 56)) for seed in range(3)]
    root = write_drive(tmp_path, labels)
    spatial = [nearest_step(s["name"], s["kwargs"]) for s in PRESETS["default"] if TRANSFORMS[s["name"]].kind == "spatial"]
    for patch_size in (None, [24, 20]):
        data = DriveDataset(
            "train", root_path=str(root), fov_ignore_index=IGNORE, val_fraction=0.0, augmentation=spatial, patch_size=patch_size
        )
        for seed in range(12):
            item = data[(seed % 3, seed)]
            image = np.round((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
            assert_aligned(image, item["label"].numpy())
            assert item["label"].shape == tuple(patch_size or (64, 56))


def test_label_sets_stay_valid_under_the_full_default_preset(tmp_path):
    labels = [vessel_label(np.random.default_rng(seed), (64, 56)) for seed in range(3)]
    root = write_drive(tmp_path, labels)
    data = DriveDataset("train", root_path=str(root), fov_ignore_index=IGNORE, val_fraction=0.0, augmentation="default", patch_size=[32, 32])
    for seed in range(30):
        item = data[(seed % 3, seed)]
        assert set(item["label"].unique().tolist()) <= {0, 1, IGNORE}
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32


def test_items_repeat_from_their_seed_and_differ_between_seeds(tmp_path):
    labels = [vessel_label(np.random.default_rng(seed), (64, 56)) for seed in range(2)]
    root = write_drive(tmp_path, labels)
    data = DriveDataset("train", root_path=str(root), fov_ignore_index=IGNORE, val_fraction=0.0, augmentation="default")
    first, again, other = data[(0, 7)], data[(0, 7)], data[(0, 8)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])
    plain = data[0]  # an int index: the deterministic item, not augmented
    unaugmented = DriveDataset("train", root_path=str(root), fov_ignore_index=IGNORE, val_fraction=0.0)[(0, 7)]
    assert torch.equal(plain["image"], unaugmented["image"]) and torch.equal(plain["label"], unaugmented["label"])


def test_each_transform_draws_its_own_randomness():
    """albumentations seeds every transform of a Compose alike; siteflow seeds each on its own,
    so that two flips of p = 0.5 fire independently (all four combinations occur)."""
    flips = [{"name": "horizontal_flip", "kwargs": {"p": 0.5}}, {"name": "vertical_flip", "kwargs": {"p": 0.5}}]
    augmentation = Augmentation(flips, in_channels=3, num_classes=2, ignore_index=None)
    label = np.arange(4, dtype=np.int64).reshape(2, 2) % 2
    label[0, 0] = 0
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = 255  # marks the top-left corner
    corners = set()
    for seed in range(64):
        out, _ = augmentation(image, label, np.random.default_rng(seed))
        corners.add(tuple(int(v) for v in np.argwhere(out[..., 0] == 255)[0]))
    assert corners == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_grey_images_and_presets():
    assert "color_jitter" in [name for name, _ in resolve_steps("default", 3)]
    assert "color_jitter" not in [name for name, _ in resolve_steps("default", 1)]
    assert resolve_steps("none", 3) == []
    augmentation = Augmentation("default", in_channels=1, num_classes=3, ignore_index=None)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (32, 32))
    image, moved = augmentation(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), label, rng)
    assert image.shape == (32, 32, 1) and moved.shape == (32, 32)


def test_batch_of_replayed_images_is_augmented_like_items():
    """Relay's replays: (N, C, H, W) in out_range with labels (N, H, W), a torch generator."""
    flip = [{"name": "horizontal_flip", "kwargs": {"p": 1.0}}]
    augmentation = Augmentation(flip, in_channels=3, num_classes=2, ignore_index=IGNORE, out_range=(-1.0, 1.0))
    images = torch.rand(3, 3, 8, 6) * 2 - 1
    labels = torch.randint(0, 2, (3, 8, 6))
    labels[:, 0] = IGNORE
    out_images, out_labels = augmentation.batch(images, labels, torch.Generator().manual_seed(0))
    assert torch.allclose(out_images, images.flip(-1), atol=1e-6)
    assert torch.equal(out_labels, labels.flip(-1)) and out_labels.dtype == torch.int64

    default = Augmentation("default", in_channels=3, num_classes=2, ignore_index=IGNORE, out_range=(-1.0, 1.0))
    first = default.batch(images, labels, torch.Generator().manual_seed(5))
    again = default.batch(images, labels, torch.Generator().manual_seed(5))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == images.shape and first[0].min() >= -1 and first[0].max() <= 1
    assert set(first[1].unique().tolist()) <= {0, 1, IGNORE}


# --- bad options: one clear error ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option,message",
    [
        ("heavy", "augmentation: unknown preset 'heavy' (presets: none, light, default; or a list of steps from: horizontal_flip,"),
        ("defualt", "unknown preset 'defualt'; did you mean 'default'?"),
        ([{"name": "rotat"}], "augmentation[0].name: unknown transform 'rotat'; did you mean 'rotate'? (allowed: horizontal_flip, vertical_flip, rotate, affine,"),
        ([{"name": "rotate", "kwargs": {"limt": 10}}], "augmentation[0].kwargs.limt: not an option of rotate; did you mean 'limit'? (allowed: limit, interpolation, p)"),
        ([{"name": "rotate", "kwargs": {"limit": "x"}}], "augmentation[0] (rotate): bad kwargs {'limit': 'x'}:"),
        ([{"name": "gamma", "kwargs": {"p": 2}}], "augmentation[0] (gamma): bad kwargs {'p': 2}:"),
        ([{"name": "elastic", "kwargs": {"mask_interpolation": 1}}], "augmentation[0].kwargs.mask_interpolation: set by siteflow so that the labels stay valid (labels are resampled by nearest neighbour"),
        ([{"name": "affine", "kwargs": {"fill_mask": 3}}], "augmentation[0].kwargs.fill_mask: set by siteflow"),
        ([{"name": "affine", "kwargs": {"fit_output": True}}], "augmentation[0].kwargs.fit_output: not an option of affine"),
        ([{"name": "flip"}, "x"], "augmentation[0].name: unknown transform 'flip'"),
        ([{"rotate": {}}], "augmentation[0]: a step is {name: <transform>, kwargs: {...}}"),
        (7, "augmentation: expected a preset name (none, light, default) or a list of steps, got 7"),
    ],
)
def test_bad_augmentation_options_are_one_clear_error(option, message):
    with pytest.raises(ValueError) as caught:
        Augmentation(option, in_channels=3, num_classes=2, ignore_index=None)
    assert message in str(caught.value)
    with pytest.raises(ValueError) as described:  # the config layer's check, before training
        DATASETS.get("drive").describe(root_path="x", augmentation=option)
    assert message in str(described.value)


def test_a_colour_step_on_grey_images_is_refused():
    with pytest.raises(ValueError, match=r"augmentation\[1\]: color_jitter changes colours and needs 3-channel images, these have 1"):
        Augmentation([{"name": "gamma"}, {"name": "color_jitter"}], in_channels=1, num_classes=2, ignore_index=None)


def write_drive(root: Path, labels: list[np.ndarray]) -> Path:
    """A DRIVE release (training part) whose images are their labels painted (see
    :func:`painted`), with manual annotations and FOV masks; returns its root."""
    folder = root / "training"
    for sub in ("images", "1st_manual", "mask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for number, label in enumerate(labels, start=21):
        Image.fromarray(painted(label)).save(folder / "images" / f"{number}_training.tif")
        Image.fromarray((255 * (label == 1)).astype(np.uint8)).save(folder / "1st_manual" / f"{number}_manual1.gif")
        Image.fromarray((255 * (label != IGNORE)).astype(np.uint8)).save(folder / "mask" / f"{number}_training_mask.gif")
    return root
