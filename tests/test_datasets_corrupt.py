"""Corrupt data on disk: the synthetic releases of every layout (DoFE fundus, DRIVE, STARE,
CHASE_DB1, CheXpert, ChestX-ray14, VinDr-CXR, MIMIC-CXR-JPG) with one file spoiled.

A dataset's ``check()`` must raise DataError naming the spoiled file before training, and
reading the item must raise the same when the file goes bad later; the conversions that are
supported (16-bit, palette, opaque alpha, JPEG-noisy masks) must read the right values."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from torch.utils.data import DataLoader

from siteflow.config.schema import Component, SiteConfig
from siteflow.datasets import (
    ChaseDataset,
    ChestXray14Dataset,
    CheXpertDataset,
    DataError,
    DriveDataset,
    FundusDataset,
    MimicCxrDataset,
    MissingFileError,
    StareDataset,
    VinDrCxrDataset,
    check_sites,
    generate_cxr_sites,
    generate_fundus_sites,
    generate_vessel_sites,
)
from siteflow.datasets.base import SiteDataset
from siteflow.datasets.chest_xray.synthetic.sites import SITES as CXR_SITES
from siteflow.datasets.chest_xray.synthetic.sites import site_root

# --- the releases ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    """One small generated release per family: fundus (one DoFE domain), vessels, chest X-ray."""
    root = tmp_path_factory.mktemp("releases")
    return {
        "fundus": generate_fundus_sites(root / "fundus", num_sites=1, train_per_site=7, test_per_site=1, native_size=(24, 24)),
        "vessels": generate_vessel_sites(root / "vessels", train_per_site=4, test_per_site=2, native_size=(24, 32)),
        "cxr": generate_cxr_sites(root / "cxr", train_per_site=4, test_per_site=1, native_size=(16, 16)),
    }


@dataclass(frozen=True)
class Layout:
    """A release layout: where its generated site is (family, folder below the family's root)
    and how its train split (every training sample, native size unless ``options`` say
    otherwise) is built from a copy: ``build(root, **options)``."""

    family: str
    folder: str
    build: Callable[..., SiteDataset]


CXR_FOLDERS = {spec.layout: str(site_root(Path(), spec)) for spec in CXR_SITES}
SEGMENTATION = {
    "dofe": Layout("fundus", ".", lambda root, **options: FundusDataset("train", root_path=str(root), folder="Domain1", val_fraction=0.0, **options)),
    "drive": Layout("vessels", "DRIVE", lambda root, **options: DriveDataset("train", root_path=str(root), fov_ignore_index=255, val_fraction=0.0, **options)),
    "stare": Layout("vessels", "STARE", lambda root, **options: StareDataset("train", root_path=str(root), num_test=2, val_fraction=0.0, **options)),
    "chase_db1": Layout("vessels", "CHASE_DB1", lambda root, **options: ChaseDataset("train", root_path=str(root), num_test=2, val_fraction=0.0, **options)),
}  # fmt: skip
CHEST = {
    name: Layout("cxr", CXR_FOLDERS[name], lambda root, cls=cls: cls("train", root_path=str(root), val_fraction=0.0, img_size=None))
    for name, cls in (
        ("chexpert", CheXpertDataset),
        ("chestxray14", ChestXray14Dataset),
        ("vindr_cxr", VinDrCxrDataset),
        ("mimic_cxr", MimicCxrDataset),
    )
}  # fmt: skip
LAYOUTS = {**SEGMENTATION, **CHEST}


def site_copy(releases: dict[str, Path], layout: Layout, tmp_path: Path, **options) -> SiteDataset:
    """The train split of a fresh copy of ``layout``'s generated site (so it can be spoiled)."""
    root = shutil.copytree(releases[layout.family] / layout.folder, tmp_path / "site")
    return layout.build(root, **options)


def image_files(data: SiteDataset) -> list[Path]:
    """The image files of the unique samples of a segmentation or chest X-ray dataset."""
    return [sample.image for sample in getattr(data, "samples", getattr(data, "records", []))]


def raises_naming(path: Path, problem: str) -> pytest.RaisesExc:
    """pytest.raises of a DataError whose message names ``path`` and matches ``problem``."""
    return pytest.raises(DataError, match=rf"(?s){re.escape(str(path))}.*{problem}")


# --- ways to spoil a file ----------------------------------------------------------------------


def empty(path: Path) -> None:
    """A zero-byte file."""
    path.write_bytes(b"")


def truncate(path: Path) -> None:
    """The first half of the file, as after an interrupted copy."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def text(path: Path) -> None:
    """A text file under the image's name."""
    path.write_text("id,finding\n1,none\n")


def huge_png(path: Path) -> None:
    """A valid, tiny PNG whose header claims 100000 x 100000 pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def save_png(path: Path, pixels: np.ndarray | Image.Image) -> None:
    """``pixels`` stored as PNG under ``path``, whatever its suffix (content decides the format)."""
    picture = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    picture.save(path, format="PNG")


def grey(path: Path) -> np.ndarray:
    """uint8 (H, W) grey levels of an 8-bit file."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) colours of an 8-bit file."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


SPOILED_IMAGES = {
    "zero_byte": (empty, r"is empty \(0 bytes\)"),
    "truncated": (truncate, r"truncated"),
    "text_file": (text, r"not an image file Pillow can read|truncated or corrupt"),
    "decompression_bomb": (huge_png, r"decompression-bomb bound"),
}


# --- image files --------------------------------------------------------------------------------


@pytest.mark.parametrize("spoil", SPOILED_IMAGES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_names_a_bad_image(releases, tmp_path, layout, spoil):
    data = site_copy(releases, LAYOUTS[layout], tmp_path)
    data.check()
    victim = image_files(data)[0]
    write, problem = SPOILED_IMAGES[spoil]
    write(victim)
    with raises_naming(victim, problem) as error:
        data.check()
    assert error.value.paths == (victim,)
    assert f"1 of {data.num_samples} samples have bad files" in str(error.value)


@pytest.mark.parametrize("spoil", ["zero_byte", "truncated", "text_file"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_image_that_goes_bad_after_the_check_names_itself_when_read(releases, tmp_path, layout, spoil):
    data = site_copy(releases, LAYOUTS[layout], tmp_path)
    data.check()
    victim = image_files(data)[0]
    write, problem = SPOILED_IMAGES[spoil]
    write(victim)
    with raises_naming(victim, problem):
        data[0]


def test_the_error_crosses_a_dataloader_worker(releases, tmp_path):
    data = site_copy(releases, SEGMENTATION["dofe"], tmp_path)
    truncate(data.samples[0].image)
    with raises_naming(data.samples[0].image, "truncated"):
        next(iter(DataLoader(data, batch_size=2, num_workers=1)))


def test_missing_images_listed_in_a_label_file_are_named(releases, tmp_path):
    data = site_copy(releases, CHEST["chexpert"], tmp_path)
    for record in data.records[:2]:
        record.image.unlink()
    with pytest.raises(DataError, match="2 of 4 samples have bad files") as error:
        data.check()
    assert error.value.paths == tuple(record.image for record in data.records[:2])
    assert f"listed in {data.records[0].listed_in} does not exist" in str(error.value)
    with pytest.raises(MissingFileError):
        data[0]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.slow
def test_every_bad_file_is_found_and_five_are_listed(releases, tmp_path, monkeypatch, layout):
    data = site_copy(releases, LAYOUTS[layout], tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every image is "too large"
    with pytest.raises(DataError, match="decompression-bomb bound") as error:
        data.check()
    images = image_files(data)
    assert error.value.paths == tuple(images)
    message = str(error.value)
    assert sum(str(path) in message for path in images) == min(len(images), 5)
    assert (f"... and {len(images) - 5} more" in message) == (len(images) > 5)


def cut_two_bytes(path: Path) -> None:
    """The file without its last two bytes."""
    path.write_bytes(path.read_bytes()[:-2])


def dicom_of(pixels: np.ndarray, vector: bool = False) -> Callable[[Path], None]:
    """A spoiler writing ``pixels`` as a DICOM (3D: frames; ``vector``: colour components)."""
    return lambda path: sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=vector), str(path), imageIO="GDCMImageIO")


@pytest.mark.parametrize(
    "write, problem",
    [
        (cut_two_bytes, r"is truncated or corrupt \(RuntimeError: .*Unable to determine ImageIO reader"),
        (dicom_of(np.zeros((3, 16, 16), dtype=np.uint16)), r"holds 3 frame\(s\) of 1 component\(s\).*not one grey image"),
        (dicom_of(np.zeros((16, 16, 3), dtype=np.uint8), vector=True), r"holds 1 frame\(s\) of 3 component\(s\)"),
    ],
    ids=["slightly_truncated", "multi_frame", "colour"],
)
def test_a_bad_dicom_is_named(releases, tmp_path, write, problem):
    data = site_copy(releases, CHEST["vindr_cxr"], tmp_path)
    victim = data.records[1].image
    write(victim)
    with raises_naming(victim, problem):
        data.check()
    with raises_naming(victim, problem):
        data[1]


# --- masks --------------------------------------------------------------------------------------


def wrong_size(path: Path) -> None:
    """The mask one column narrower than its image."""
    levels = grey(path)
    save_png(path, np.ascontiguousarray(levels[:, :-1]))


def foreign_levels(path: Path) -> None:
    """The mask drawn with the grey levels 100 and 170, none of any dataset's."""
    save_png(path, np.where(grey(path) < 128, 100, 170).astype(np.uint8))


def class_ids(path: Path) -> None:
    """The classes written as ids 0, 1, ... instead of grey levels."""
    levels = np.unique(grey(path))
    save_png(path, np.searchsorted(levels, grey(path)).astype(np.uint8))


def sixteen_bit_class_ids(path: Path) -> None:
    """Class ids stored in a 16-bit file."""
    levels = np.unique(grey(path))
    save_png(path, np.searchsorted(levels, grey(path)).astype(np.uint16))


def transparent(path: Path) -> None:
    """The mask with an alpha channel, one pixel of it transparent."""
    picture = Image.fromarray(grey(path)).convert("RGBA")
    picture.putpixel((0, 0), (0, 0, 0, 0))
    save_png(path, picture)


SPOILED_MASKS = {
    **SPOILED_IMAGES,
    "wrong_size": (wrong_size, r"is \d+x\d+ pixels but image .* is \d+x\d+"),
    "foreign_levels": (foreign_levels, r"% of the pixels fit no class"),
    "class_ids": (class_ids, r"look like class ids"),
    "sixteen_bit_class_ids": (sixteen_bit_class_ids, r"look like class ids"),
    "transparent": (transparent, r"has transparent pixels"),
}


@pytest.mark.parametrize("spoil", SPOILED_MASKS)
@pytest.mark.parametrize("layout", SEGMENTATION)
def test_check_names_a_bad_mask(releases, tmp_path, layout, spoil):
    data = site_copy(releases, SEGMENTATION[layout], tmp_path)
    victim = data.samples[-1].mask
    write, problem = SPOILED_MASKS[spoil]
    write(victim)
    with raises_naming(victim, problem) as error:
        data.check()
    assert error.value.paths == (victim,)
    with raises_naming(victim, problem):
        data[data.num_samples - 1]


@pytest.mark.parametrize("layout", SEGMENTATION)
def test_a_missing_mask_is_named_when_the_site_is_listed(releases, tmp_path, layout):
    data = site_copy(releases, SEGMENTATION[layout], tmp_path)
    data.samples[1].mask.unlink()
    with pytest.raises(MissingFileError, match=re.escape(str(data.samples[1].mask))) as error:
        SEGMENTATION[layout].build(tmp_path / "site")
    assert error.value.paths == (data.samples[1].mask,)
    assert isinstance(error.value, FileNotFoundError)


@pytest.mark.parametrize("spoil", ["wrong_size", "class_ids", "truncated"])
def test_check_names_a_bad_fov_mask(releases, tmp_path, spoil):
    data = site_copy(releases, SEGMENTATION["drive"], tmp_path)
    victim = data.samples[0].fov
    write, problem = SPOILED_MASKS[spoil]
    write(victim)
    with raises_naming(victim, problem) as error:
        data.check()
    assert error.value.paths == (victim,)


# --- supported conversions ----------------------------------------------------------------------


def items(data: SiteDataset) -> list[dict]:
    return [data[i] for i in range(data.num_samples)]


def assert_same_items(first: list[dict], second: list[dict]) -> None:
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["label"], b["label"])


@pytest.mark.parametrize("layout", SEGMENTATION)
def test_sixteen_bit_grey_images_use_their_full_range(releases, tmp_path, layout):
    data = site_copy(releases, SEGMENTATION[layout], tmp_path, out_range=(0.0, 1.0))
    victim = data.samples[0].image
    height, width = grey(victim).shape
    values = np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)
    save_png(victim, values)
    data.check()
    image = data[0]["image"]
    assert image.shape == (3, height, width)
    for channel in image:  # grey repeated over RGB, scaled by 65535, not clipped at 255
        assert channel.numpy() == pytest.approx(values / 65535.0, abs=1e-6)
    save_png(victim, np.full((height, width), 30000, dtype=np.uint16))
    resized = SEGMENTATION[layout].build(tmp_path / "site", out_range=(0.0, 1.0), img_size=[10, 7])
    assert resized[0]["image"].numpy() == pytest.approx(np.full((3, 10, 7), 30000 / 65535.0), abs=1e-6)


@pytest.mark.parametrize("layout", SEGMENTATION)
def test_palette_and_opaque_rgba_images_read_as_their_colours(releases, tmp_path, layout):
    data = site_copy(releases, SEGMENTATION[layout], tmp_path)
    reference = items(data)
    first, second = data.samples[0].image, data.samples[1].image
    palette = Image.fromarray(rgb(first)).quantize(256)
    expected = np.asarray(palette.convert("RGB"))
    save_png(first, palette)
    save_png(second, Image.fromarray(rgb(second)).convert("RGBA"))
    data.check()
    got = items(data)
    scaled = torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0)
    assert torch.equal(got[0]["image"], scaled)
    assert_same_items(got[1:], reference[1:])


MASK_ENCODINGS: dict[str, Callable[[np.ndarray, Path], None]] = {
    "scaled_to_16_bit": lambda levels, path: save_png(path, levels.astype(np.uint16) * 257),
    "8_bit_levels_in_16_bit": lambda levels, path: save_png(path, levels.astype(np.uint16)),
    # A JPEG under the mask's name: the levels plus compression noise.
    "jpeg_noise": lambda levels, path: Image.fromarray(levels).save(path, format="JPEG", quality=75),
    "palette": lambda levels, path: Image.fromarray(levels).convert("P").save(path, format="PNG"),
    "opaque_alpha": lambda levels, path: Image.fromarray(levels).convert("LA").save(path, format="PNG"),
    "one_bit": lambda levels, path: Image.fromarray(levels > 127).save(path, format="PNG"),  # binary masks only
}


@pytest.mark.parametrize(
    "layout, stored_as",
    [(layout, name) for layout in SEGMENTATION for name in MASK_ENCODINGS if (layout, name) != ("dofe", "one_bit")],
)
def test_masks_in_other_encodings_give_the_same_classes(releases, tmp_path, layout, stored_as):
    data = site_copy(releases, SEGMENTATION[layout], tmp_path)
    reference = items(data)
    for sample in data.samples:
        MASK_ENCODINGS[stored_as](grey(sample.mask), sample.mask)
    data.check()
    assert_same_items(items(data), reference)


def test_sixteen_bit_radiographs_use_their_full_range(releases, tmp_path):
    data = site_copy(releases, CHEST["chestxray14"], tmp_path)
    victim = data.records[0].image
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    save_png(victim, values)
    data.check()
    assert data[0]["image"][0].numpy() == pytest.approx(values / 65535.0)


def test_opaque_rgba_radiographs_read_as_their_grey(releases, tmp_path):
    data = site_copy(releases, CHEST["chestxray14"], tmp_path)
    victim = data.records[0].image
    expected = data[0]["image"]
    save_png(victim, Image.fromarray(grey(victim)).convert("RGBA"))
    data.check()
    assert torch.equal(data[0]["image"], expected)


@pytest.mark.parametrize(
    "pixels, problem",
    [
        (np.full((8, 8), 0.5, dtype=np.float32), r"pixel mode 'F'.*not supported"),
        (np.full((8, 8), 70000, dtype=np.int32), r"32-bit values in 70000\.\.70000, outside"),
    ],
    ids=["float", "int32_beyond_16_bit"],
)
def test_unsupported_pixel_modes_are_refused(releases, tmp_path, pixels, problem):
    data = site_copy(releases, SEGMENTATION["drive"], tmp_path)
    victim = data.samples[0].image
    Image.fromarray(pixels).save(victim, format="TIFF")
    with raises_naming(victim, problem):
        data.check()
    with raises_naming(victim, problem):
        data[0]


# --- every site of an experiment ----------------------------------------------------------------


def test_check_sites_names_every_bad_site_and_skips_absent_ones(releases, tmp_path):
    def site(task_id: int, root: Path, available: bool = True) -> SiteConfig:
        kwargs = {"root_path": str(root), "folder": "Domain1"}
        return SiteConfig(task_id, f"site{task_id}", Component("fundus", kwargs), available)

    roots = [shutil.copytree(releases["fundus"], tmp_path / f"root{k}") for k in range(4)]
    good, truncated, missing, absent = roots
    image = next((truncated / "Domain1" / "test" / "image").iterdir())
    truncate(image)
    mask = next((missing / "Domain1" / "train" / "mask").iterdir())
    mask.unlink()
    empty(next((absent / "Domain1" / "test" / "image").iterdir()))
    sites = [site(1, good), site(2, truncated), site(3, missing), site(4, absent, available=False)]
    with pytest.raises(DataError) as error:
        check_sites(sites)
    message = str(error.value)
    assert message.startswith("the data of 3 site split(s) is not usable:")
    assert "site 'site2', test split" in message and str(image) in message
    assert "site 'site3', train split" in message and "site 'site3', val split" in message
    assert "site1" not in message and "site4" not in message
    assert error.value.paths == (image, mask, mask)
    check_sites(sites[:1])
