"""The multi-class layouts read from tiny files written in the real layouts: a folder per
class, ISIC 2019 with FLamby's files, MedMNIST .npz (2D and 3D); partitions through the
dataset options; bad input refused with the file or key named."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from siteflow.core.errors import OptionError
from siteflow.datasets import DataError
from siteflow.datasets.classification import (
    ISIC_CLASSES,
    ClassFoldersDataset,
    Isic2019Dataset,
    MedMnistDataset,
    SyntheticClassesDataset,
    generate_class_sites,
    write_isic2019,
    write_medmnist,
)
from siteflow.datasets.classification.isic2019 import CENTERS, GROUND_TRUTH
from siteflow.datasets.classification.synthetic import CLASSES


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    return generate_class_sites(tmp_path_factory.mktemp("classes"), train_per_site=30, test_per_site=12)


def test_folder_layout(sites: Path) -> None:
    train = ClassFoldersDataset("train", root_path=str(sites / "site1"), classes=list(CLASSES), img_size=[24, 24], val_fraction=0.2)
    val = ClassFoldersDataset("val", root_path=str(sites / "site1"), classes=list(CLASSES), val_fraction=0.2)
    test = ClassFoldersDataset("test", root_path=str(sites / "site1"), classes=list(CLASSES))
    files = sorted((sites / "site1" / "train").glob("*/*.png"))
    assert train.num_samples + val.num_samples == len(files) == 30 and val.num_samples == 6
    assert not set(train.sample_ids) & set(val.sample_ids)
    assert test.num_samples == len(list((sites / "site1" / "test").glob("*/*.png"))) == 12
    item = train[0]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert CLASSES[int(item["label"])] == item["id"].split("/")[0]
    by_folder = [sum(1 for f in files if f.parent.name == c) for c in CLASSES]
    assert [a + b for a, b in zip(train.class_counts(), val.class_counts())] == by_folder
    spec = ClassFoldersDataset.describe(root_path="x", classes=list(CLASSES), channels=1)
    assert (spec.task, spec.class_names, spec.in_channels) == ("classification", CLASSES, 1)
    assert ClassFoldersDataset("test", root_path=str(sites / "site1"), classes=list(CLASSES), channels=1)[0]["image"].shape[0] == 1


def test_folder_layout_refuses_an_undeclared_class(sites: Path, tmp_path: Path) -> None:
    root = tmp_path / "site"
    shutil.copytree(sites / "site1", root)
    (root / "train" / "keratosis").rename(root / "train" / "seborrhoeic")
    with pytest.raises(DataError, match=r"the folders \['seborrhoeic'\] are not declared classes"):
        ClassFoldersDataset("train", root_path=str(root), classes=list(CLASSES))
    with pytest.raises(OptionError, match="at least two"):
        ClassFoldersDataset.describe(root_path="x", classes=["one"])


def test_partition_through_the_options(sites: Path, tmp_path: Path) -> None:
    """Three sites cut from one release by a Dirichlet draw: disjoint, together the release; a
    site reads only its own files (the others' deleted, it still reads and checks); an
    index outside the sites is refused at the key ``part``."""
    root = tmp_path / "pooled"
    shutil.copytree(sites / "site2", root)
    options = {"root_path": str(root), "classes": list(CLASSES), "partition": {"scheme": "dirichlet", "num_sites": 3, "alpha": 0.3, "seed": 5}}
    parts = [ClassFoldersDataset("test", part=k, **options) for k in range(3)]
    ids = [set(p.sample_ids) for p in parts]
    assert sum(len(i) for i in ids) == len(set().union(*ids)) == 12
    trains = [ClassFoldersDataset("train", part=k, val_fraction=0.0, **options) for k in range(3)]
    assert np.sum([t.class_counts() for t in trains], axis=0).tolist() == np.bincount(
        [CLASSES.index(f.parent.name) for f in (root / "train").glob("*/*.png")], minlength=4).tolist()
    again = ClassFoldersDataset("train", part=1, val_fraction=0.0, **options)
    assert again.sample_ids == trains[1].sample_ids
    with pytest.raises(DataError, match="num_sites=40 is more than the 30 training samples"):
        ClassFoldersDataset("train", part=0, **{**options, "partition": {"scheme": "iid", "num_sites": 40}})
    for other in (0, 2):  # a site opens only its own images (the listing of the release is what it shares)
        for sample in trains[other].samples:
            sample.source.unlink()
    trains[1].check()
    assert trains[1][0]["image"].shape == (3, 32, 32)
    with pytest.raises(OptionError, match=r"must be the site's index, 0 \.\.\. 2, not 3"):
        ClassFoldersDataset.describe(part=3, **options)
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['sites'\]"):
        ClassFoldersDataset.describe(part=0, **{**options, "partition": {"sites": 3}})


def test_partition_by_metadata_column(sites: Path, tmp_path: Path) -> None:
    root = tmp_path / "pooled"
    shutil.copytree(sites / "site1", root)
    ids = sorted(f"{f.parent.name}/{f.stem}" for f in root.glob("*/*/*.png"))
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "hospital"])
        writer.writerows([i, "north" if n % 3 else "south"] for n, i in enumerate(ids))
    options = {"root_path": str(root), "classes": list(CLASSES), "metadata": "metadata.csv", "partition": {"scheme": "column", "column": "hospital"}}
    north = ClassFoldersDataset("test", part="north", **options)
    south = ClassFoldersDataset("test", part="south", **options)
    assert north.num_samples + south.num_samples == 12
    with pytest.raises(DataError, match=r"part 'east' is not a value of the partition's column 'hospital' \(values: \['north', 'south'\]\)"):
        ClassFoldersDataset("test", part="east", **options)


def test_isic2019_layout(tmp_path: Path) -> None:
    root = write_isic2019(tmp_path / "isic", per_center=6)
    for center in range(6):
        train = Isic2019Dataset("train", root_path=str(root), center=center, img_size=[32, 32], val_fraction=0.25)
        val = Isic2019Dataset("val", root_path=str(root), center=center, img_size=[32, 32], val_fraction=0.25)
        test = Isic2019Dataset("test", root_path=str(root), center=center, img_size=[32, 32])
        assert (train.num_samples + val.num_samples, test.num_samples) == (4, 2)
        assert all(s.id.startswith(f"ISIC_{center}") for s in train.samples + test.samples)
        labels = [(center + index) % 8 for index in range(6) if index % 3 == 2]
        assert sorted(test.labels.tolist()) == sorted(labels)
        test.check()
    assert test[0]["image"].shape == (3, 32, 32)
    assert Isic2019Dataset.describe(root_path="x").class_names == ISIC_CLASSES and len(CENTERS) == 6


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["0.0"] * 9, "one diagnosis column must be 1 and the others 0"),
        (["1.0", "1.0"] + ["0.0"] * 7, "one diagnosis column must be 1 and the others 0"),
        (["0.0"] * 8 + ["1.0"], "class UNK is not one of the classes"),
    ],
)
def test_isic2019_refuses_bad_rows(tmp_path: Path, cells: list[str], message: str) -> None:
    root = write_isic2019(tmp_path / "isic", per_center=3)
    path = root / GROUND_TRUTH
    lines = path.read_text().splitlines()
    name = lines[2].split(",")[0]
    lines[2] = ",".join([name, *cells])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{GROUND_TRUTH}, line 3 \(image {name}\): {message}"):
        Isic2019Dataset("train", root_path=str(root), center=0)


def test_medmnist_2d_and_3d(tmp_path: Path) -> None:
    path = write_medmnist(tmp_path / "dermamnist.npz", counts=(28, 7, 14))
    train = MedMnistDataset("train", root_path=str(tmp_path), collection="dermamnist", channels=3)
    val = MedMnistDataset("val", root_path=str(tmp_path), collection="dermamnist", channels=3)
    test = MedMnistDataset("test", root_path=str(tmp_path), collection="dermamnist")
    assert (train.num_samples, val.num_samples, test.num_samples) == (28, 7, 14)
    assert train[0]["image"].shape == (3, 28, 28) and test[0]["image"].shape == (1, 28, 28)
    arrays = np.load(path)
    assert train.labels.tolist() == arrays["train_labels"][:, 0].tolist()
    assert train.class_counts() == np.bincount(arrays["train_labels"][:, 0], minlength=7).tolist()
    write_medmnist(tmp_path / "organmnist3d.npz", collection="organmnist3d", counts=(11, 3, 5), size=8)
    volumes = MedMnistDataset("train", root_path=str(tmp_path), collection="organmnist3d")
    assert volumes[0]["image"].shape == (1, 8, 8, 8)
    spec = MedMnistDataset.describe(root_path="x", collection="organmnist3d")
    assert (spec.spatial_dims, spec.image_size, len(spec.class_names)) == (3, None, 11)
    split = {"scheme": "dirichlet", "num_sites": 4, "alpha": 0.5}
    parts = [MedMnistDataset("train", root_path=str(tmp_path), collection="dermamnist", partition=split, part=k) for k in range(4)]
    assert sum(p.num_samples for p in parts) == 28


def test_medmnist_refuses_a_label_outside_the_classes(tmp_path: Path) -> None:
    write_medmnist(tmp_path / "breastmnist.npz", collection="breastmnist", counts=(6, 2, 2))
    arrays = dict(np.load(tmp_path / "breastmnist.npz"))
    arrays["test_labels"][1, 0] = 7
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(DataError, match=r"breastmnist\.npz: image 'test_1' has class id 7, outside the declared classes 0 \.\.\. 1"):
        MedMnistDataset("test", root_path=str(tmp_path), collection="breastmnist")
    with pytest.raises(OptionError, match="not a multi-class MedMNIST collection"):
        MedMnistDataset.describe(root_path="x", collection="chestmnist")


def test_synthetic_sites_differ_in_class_mix(tmp_path: Path) -> None:
    first, last = (SyntheticClassesDataset("train", root_path=str(tmp_path), folder=f, train_per_site=60, test_per_site=6) for f in ("site1", "site3"))
    assert np.argmax(first.class_counts()) == 0 and np.argmax(last.class_counts()) == 3
