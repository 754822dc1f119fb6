"""The synthetic multi-site generator, its cache, the registered synthetic datasets, and every
registered dataset's config options and :class:`DataSpec`, checked on generated data."""

import json
import threading
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import siteflow.datasets  # noqa: F401  (registers the datasets)
from siteflow.config.validation import schema
from siteflow.datasets import (
    DataSpec,
    SyntheticFundusDataset,
    SyntheticVesselsDataset,
    generate_cxr_sites,
    generate_fundus_sites,
    generate_vessel_sites,
)
from siteflow.datasets.chest_xray.synthetic.sites import SITES as CXR_SITES
from siteflow.datasets.chest_xray.synthetic.sites import site_root as cxr_site_root
from siteflow.datasets.synthetic import cached_generation
from siteflow.datasets.synthetic.cache import MARKER, ROOT_MARKER
from siteflow.datasets.classification.synthetic import CLASSES, generate_class_sites, write_isic2019, write_medmnist
from siteflow.core.registry import DATASETS

SMALL_FUNDUS = dict(num_sites=3, train_per_site=6, test_per_site=1, native_size=(32, 48))
SMALL_VESSELS = dict(train_per_site=2, test_per_site=1, native_size=(32, 40))


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def fundus(tmp_path_factory):
    return generate_fundus_sites(tmp_path_factory.mktemp("fundus"), **SMALL_FUNDUS)


def test_same_arguments_give_identical_files(fundus, tmp_path):
    again = files(generate_fundus_sites(tmp_path / "again", **SMALL_FUNDUS))
    assert again == files(fundus)
    assert len(again) == 3 * 7 * 2
    other = files(generate_fundus_sites(tmp_path / "other", **{**SMALL_FUNDUS, "seed": 1}))
    assert other.keys() == again.keys()
    assert sum(other[name] != again[name] for name in again) > len(again) / 2


def test_vessel_files_are_deterministic(tmp_path):
    first = files(generate_vessel_sites(tmp_path / "a", **SMALL_VESSELS))
    assert files(generate_vessel_sites(tmp_path / "b", **SMALL_VESSELS)) == first
    assert sorted(first) == [
        "CHASE_DB1/Image_01L.jpg", "CHASE_DB1/Image_01L_1stHO.png",
        "CHASE_DB1/Image_01R.jpg", "CHASE_DB1/Image_01R_1stHO.png",
        "CHASE_DB1/Image_02L.jpg", "CHASE_DB1/Image_02L_1stHO.png",
        "DRIVE/test/1st_manual/01_manual1.gif", "DRIVE/test/images/01_test.tif",
        "DRIVE/test/mask/01_test_mask.gif",
        "DRIVE/training/1st_manual/02_manual1.gif", "DRIVE/training/1st_manual/03_manual1.gif",
        "DRIVE/training/images/02_training.tif", "DRIVE/training/images/03_training.tif",
        "DRIVE/training/mask/02_training_mask.gif", "DRIVE/training/mask/03_training_mask.gif",
        "STARE/labels-ah/im0001.ah.ppm", "STARE/labels-ah/im0002.ah.ppm",
        "STARE/labels-ah/im0003.ah.ppm",
        "STARE/stare-images/im0001.ppm", "STARE/stare-images/im0002.ppm",
        "STARE/stare-images/im0003.ppm",
    ]  # fmt: skip
    other = files(generate_vessel_sites(tmp_path / "c", **{**SMALL_VESSELS, "seed": 5}))
    assert other["DRIVE/test/images/01_test.tif"] != first["DRIVE/test/images/01_test.tif"]


def test_fundus_sites_layout_and_masks(fundus):
    for k, side in ((1, 32), (2, 40), (3, 48)):
        images = sorted((fundus / f"Domain{k}" / "train" / "image").glob("*.png"))
        assert [p.name for p in images] == [f"d{k}_train_{i:03d}.png" for i in range(6)]
        for image in images:
            picture = pixels(image)
            mask = pixels(fundus / f"Domain{k}" / "train" / "mask" / image.name)
            assert picture.shape == (side, side, 3) and mask.shape == (side, side)
            assert set(np.unique(mask).tolist()) == {0, 128, 255}
            assert picture[:4, :4].mean() < 25  # dark outside the field of view
            disc = mask < 255
            assert picture[disc].mean() > picture[~disc].mean() + 40  # the disc is bright


def test_sites_differ_in_colour(fundus):
    means = []
    for k in (1, 2, 3):
        images = (pixels(p).astype(float) for p in (fundus / f"Domain{k}/train/image").glob("*"))
        means.append(np.mean([im[im.sum(-1) > 60].mean(0) for im in images], axis=0))
    shares = np.array([m / m.sum() for m in means])
    # Casts: site 1 red, site 2 green, site 3 blue.
    assert shares[:, 0].argmax() == 0 and shares[:, 1].argmax() == 1 and shares[:, 2].argmax() == 2
    for a in range(3):
        for b in range(a):
            assert np.abs(means[a] - means[b]).max() > 15


def test_vessel_masks_lie_inside_the_field_of_view(tmp_path):
    drive = generate_vessel_sites(tmp_path, **SMALL_VESSELS) / "DRIVE" / "training"
    vessels = pixels(drive / "1st_manual" / "02_manual1.gif") > 0
    fov = pixels(drive / "mask" / "02_training_mask.gif") > 0
    assert 0.03 < vessels.mean() < 0.3
    assert not (vessels & ~fov).any()


def generated_sets(root: Path) -> list[Path]:
    """What a cache root holds besides its marker (:data:`ROOT_MARKER`)."""
    assert (root / ROOT_MARKER).is_file()
    return sorted(entry for entry in root.iterdir() if entry.name != ROOT_MARKER)


def test_fundus_dataset_generates_once_then_reuses(tmp_path):
    kwargs = dict(root_path=str(tmp_path), folder="Domain2", img_size=[16, 16], **SMALL_FUNDUS)
    data = SyntheticFundusDataset("train", **kwargs)
    (cache,) = generated_sets(tmp_path)
    marker = json.loads((cache / MARKER).read_text())
    assert marker["kind"] == "fundus" and marker["params"]["native_size"] == [32, 48]
    stamp = (cache / MARKER).stat().st_mtime_ns, (cache / "Domain1").stat().st_ino
    again = SyntheticFundusDataset("val", **kwargs)
    assert ((cache / MARKER).stat().st_mtime_ns, (cache / "Domain1").stat().st_ino) == stamp
    assert generated_sets(tmp_path) == [cache]
    assert (data.num_samples, again.num_samples) == (5, 1)
    item = data[0]
    assert item["image"].shape == (3, 16, 16) and item["id"].startswith("d2_train_")
    assert set(item["label"].unique().tolist()) == {0, 1, 2}
    SyntheticFundusDataset("test", **{**kwargs, "seed": 3})
    assert len(generated_sets(tmp_path)) == 2  # other parameters, other folder


def test_racing_generations_share_one_folder(tmp_path):
    # Four threads all find the cache empty and generate; none renames before all have
    # generated, so one rename wins and three lose the race.
    started, generated = threading.Barrier(4, timeout=60), threading.Barrier(4, timeout=60)
    results = []

    def generate(folder: Path) -> None:
        generate_vessel_sites(folder, **SMALL_VESSELS)
        generated.wait()

    def worker() -> None:
        started.wait()
        results.append(cached_generation(tmp_path / "cache", "race", {"n": 1}, generate))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert generated_sets(tmp_path / "cache") == [results[0]]  # no scratch folder left
    expected = files(generate_vessel_sites(tmp_path / "direct", **SMALL_VESSELS))
    assert files(results[0]).keys() == expected.keys() | {MARKER}


def test_vessels_dataset_uses_each_layout_reader(tmp_path):
    kwargs = dict(root_path=str(tmp_path), **SMALL_VESSELS)
    drive = SyntheticVesselsDataset("test", folder="DRIVE", fov_ignore_index=-1, **kwargs)
    assert drive.sample_ids == ["01_test"]
    assert drive[0]["label"][0, 0] == -1
    stare = SyntheticVesselsDataset("test", folder="STARE", fov_ignore_index=-1, **kwargs)
    assert stare.sample_ids == ["im0003"] and stare[0]["label"].min() == 0
    chase = SyntheticVesselsDataset("train", folder="CHASE_DB1", val_fraction=0.0, **kwargs)
    assert chase.sample_ids == ["Image_01L", "Image_01R"]
    assert len(generated_sets(tmp_path)) == 1


def test_unknown_site_and_no_required_paths(tmp_path):
    with pytest.raises(ValueError, match=r"folder 'Domain4' is not a generated site"):
        SyntheticFundusDataset("train", root_path=str(tmp_path), folder="Domain4")
    with pytest.raises(ValueError, match=r"folder 'HRF' is not a generated site"):
        SyntheticVesselsDataset("train", root_path=str(tmp_path), folder="HRF")
    assert SyntheticFundusDataset.required_paths(root_path="/nowhere") == {}
    assert SyntheticVesselsDataset.required_paths(root_path="/nowhere") == {}


ALLOWED = (int, float, bool, str, dict, type(None))


def hint_is_allowed(hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(hint_is_allowed(a) for a in args)
    if origin is list:
        return len(args) == 1 and hint_is_allowed(args[0])
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and hint_is_allowed(args[0])
    if origin is dict:
        return len(args) == 2 and args[0] is str and hint_is_allowed(args[1])
    return hint in ALLOWED


@pytest.mark.parametrize("name", DATASETS.names())
def test_constructor_signatures_fit_the_config_layer(name):
    cls = DATASETS.get(name)
    options = list(schema(cls).options.values())  # the class's own, then its parents'
    params = [option.parameter for option in options]
    hints = {option.parameter.name: option.hint for option in options}
    assert params[0].name == "split" and params[0].kind is params[0].POSITIONAL_OR_KEYWORD
    for param in params[1:]:
        assert param.kind is param.KEYWORD_ONLY, param.name
        assert hint_is_allowed(hints[param.name]), (param.name, hints[param.name])
        assert not isinstance(param.default, (list, dict, set)), param.name
    assert {"img_size", "out_range", "val_fraction", "split_seed", "num_replica"} <= set(hints)
    assert not schema(cls).open


# --- DataSpec: what the data looks like, from the config alone ----------------------------------

SMALL_CXR = dict(train_per_site=4, test_per_site=2, native_size=(32, 40))
CXR_SITE_BY_LAYOUT = {spec.layout: spec for spec in CXR_SITES}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """Small sets of the three generators, and a cache folder for the synthetic datasets."""
    root = tmp_path_factory.mktemp("generated")
    return {
        "fundus": generate_fundus_sites(root / "fundus", **SMALL_FUNDUS),
        "vessels": generate_vessel_sites(root / "vessels", **SMALL_VESSELS),
        "cxr": generate_cxr_sites(root / "cxr", **SMALL_CXR),
        "classes": generate_class_sites(root / "classes", train_per_site=6, test_per_site=3),
        "isic2019": write_isic2019(root / "isic2019", per_center=3),
        "medmnist": write_medmnist(root / "medmnist" / "dermamnist.npz", counts=(8, 3, 4)).parent,
        "cache": root / "cache",
    }


def cxr_root(generated: dict[str, Path], layout: str) -> str:
    """The release folder of the generated chest X-ray site written in ``layout``."""
    return str(cxr_site_root(generated["cxr"], CXR_SITE_BY_LAYOUT[layout]))


# Every registered dataset: its config kwargs over the generated sets (some options set, to see
# them reach the spec; the others at their defaults).
SPEC_CASES: dict[str, Callable[[dict[str, Path]], dict[str, Any]]] = {
    "fundus": lambda g: dict(root_path=str(g["fundus"]), folder="Domain2", img_size=[24, 20]),
    "drive": lambda g: dict(root_path=str(g["vessels"] / "DRIVE"), fov_ignore_index=255, img_size=[20, 16]),
    "stare": lambda g: dict(root_path=str(g["vessels"] / "STARE"), num_test=1),
    "chase_db1": lambda g: dict(root_path=str(g["vessels"] / "CHASE_DB1"), num_test=1, img_size=[16, 16]),
    "synthetic_fundus": lambda g: dict(root_path=str(g["cache"]), folder="Domain3", **SMALL_FUNDUS),
    "synthetic_vessels": lambda g: dict(
        root_path=str(g["cache"]), folder="STARE", fov_ignore_index=-1, img_size=[12, 16], **SMALL_VESSELS
    ),
    "chexpert": lambda g: dict(root_path=cxr_root(g, "chexpert"), channels=3),
    "chestxray14": lambda g: dict(root_path=cxr_root(g, "chestxray14"), labels=["Effusion", "edema"], img_size=None),
    "vindr_cxr": lambda g: dict(root_path=cxr_root(g, "vindr_cxr"), img_size=[32, 24]),
    "mimic_cxr": lambda g: dict(root_path=cxr_root(g, "mimic_cxr"), labels=["pneumothorax", "Pleural Effusion"]),
    "synthetic_cxr": lambda g: dict(root_path=str(g["cache"]), folder="site3", channels=3, **SMALL_CXR),
    "class_folders": lambda g: dict(root_path=str(g["classes"] / "site2"), classes=list(CLASSES), img_size=[20, 24]),
    "isic2019": lambda g: dict(root_path=str(g["isic2019"]), center=1, img_size=[16, 16]),
    "medmnist": lambda g: dict(root_path=str(g["medmnist"]), collection="dermamnist", channels=3),
    "synthetic_classes": lambda g: dict(root_path=str(g["cache"]), folder="site2", train_per_site=6, test_per_site=3),
}


VOLUMES = ("decathlon", "volume_folders", "synthetic_volumes")  # their describe: tests/test_volumes.py


@pytest.mark.parametrize("name", [name for name in DATASETS.names() if name not in VOLUMES])
def test_describe_tells_what_a_built_split_reports(name, generated, tmp_path):
    cls = DATASETS.get(name)
    kwargs = SPEC_CASES[name](generated)
    nowhere = tmp_path / "nowhere"
    spec = cls.describe(**{**kwargs, "root_path": str(nowhere)})
    assert not nowhere.exists()  # nothing read, nothing generated
    assert cls.describe(**kwargs) == spec
    data = cls("test", **kwargs)
    names = data.label_names if data.task == "multilabel" else data.class_names
    assert (spec.task, spec.class_names, spec.in_channels, spec.ignore_index) == (
        data.task,
        tuple(names),
        data.in_channels,
        data.ignore_index,
    )
    assert spec.image_size == data.img_size
    if spec.image_size is not None:
        assert tuple(data[0]["image"].shape) == (spec.in_channels, *spec.image_size)


def test_describe_fills_in_the_declared_defaults():
    assert DATASETS.get("synthetic_cxr").describe(folder="site2") == DataSpec(
        task="multilabel",
        class_names=("pneumonia", "edema"),
        in_channels=1,
        image_size=(64, 64),
        ignore_index=None,
    )
    assert DATASETS.get("drive").describe(root_path="x") == DataSpec(
        task="segmentation",
        class_names=("background", "vessel"),
        in_channels=3,
        image_size=None,
        ignore_index=None,
    )
    assert DATASETS.get("chexpert").describe(root_path="x").image_size == (224, 224)
