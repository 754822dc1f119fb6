"""Volume release layouts beyond one file per case: a test split carved from the training cases
of a release that labels only those (the Decathlon), nnU-Net's one file per channel, and
nnU-Net v2's dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from siteflow.datasets import DataError, DecathlonDataset, VolumeFolderDataset
from siteflow.datasets.errors import MissingFileError
from siteflow.datasets.synthetic.volumes import generate_volume_sites
from siteflow.datasets.volumes.layouts import read_decathlon_info

SHAPE = (6, 8, 8)  # (D, H, W)


def image_of(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    """A 3D SimpleITK image of ``array`` (D, H, W) with ``spacing`` (x, y, z) in mm."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def label_array(seed: int) -> np.ndarray:
    """uint8 (D, H, W): a box of 1 whose corner depends on ``seed``."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    corner = seed % 3
    label[1:5, corner : corner + 4, 2:6] = 1
    return label


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image_of(array), str(path))


def decathlon_without_test_labels(root: Path, ids: list[str]) -> Path:
    """A Decathlon task as released: labelled imagesTr/labelsTr, and imagesTs without labels."""
    for index, case in enumerate(ids):
        label = label_array(index)
        write(root / "imagesTr" / f"{case}.nii.gz", (50.0 + 10.0 * label).astype(np.float32))
        write(root / "labelsTr" / f"{case}.nii.gz", label)
    write(root / "imagesTs" / "unlabelled.nii.gz", np.ones(SHAPE, dtype=np.float32))
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "prostate"}}))
    return root


def splits(root: Path, parts: tuple[str, ...] = ("train", "val", "test"), **options) -> dict[str, list[str]]:
    """The case ids of each split in ``parts`` of the Decathlon task at ``root``."""
    return {split: DecathlonDataset(split, root_path=str(root), **options).sample_ids for split in parts}


def test_without_test_labels_the_test_split_is_carved_from_the_training_cases_by_seed(tmp_path):
    ids = [f"case{k:02d}" for k in range(10)]
    root = decathlon_without_test_labels(tmp_path / "Task05", ids)
    with pytest.raises(MissingFileError, match=r"labelsTs does not exist .*set the dataset's test_fraction"):
        DecathlonDataset("test", root_path=str(root))
    assert DecathlonDataset("train", root_path=str(root), val_fraction=0.2).num_samples == 8  # the default reads no test part

    parts = splits(root, test_fraction=0.3, val_fraction=0.2, split_seed=4)
    # 3 of 10 cases are test (0.3 * 10), 1 of the 7 left is val (0.2 * 7 = 1.4), 6 train
    assert [len(parts[split]) for split in ("train", "val", "test")] == [6, 1, 3]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == ids
    assert "unlabelled" not in parts["test"]
    assert splits(root, test_fraction=0.3, val_fraction=0.2, split_seed=4) == parts  # the same seed, the same split
    seeds = {tuple(splits(root, test_fraction=0.3, split_seed=seed)["test"]) for seed in range(6)}
    assert len(seeds) > 1  # another seed, another test split
    expected = sorted(np.array(ids)[np.random.default_rng(4).permutation(10)[:3]])  # carve_val's permutation
    assert parts["test"] == expected


def test_each_site_carves_its_own_test_split_and_a_bad_fraction_names_the_option(tmp_path):
    first = decathlon_without_test_labels(tmp_path / "siteA", [f"a{k}" for k in range(5)])
    second = decathlon_without_test_labels(tmp_path / "siteB", [f"b{k}" for k in range(4)])
    a, b = (DecathlonDataset("test", root_path=str(root), test_fraction=0.25).sample_ids for root in (first, second))
    assert len(a) == 1 and a[0].startswith("a") and len(b) == 1 and b[0].startswith("b")
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\)"):
            DecathlonDataset.describe(root_path=str(first), test_fraction=bad)


def test_a_folder_release_without_a_test_folder_carves_its_test_split(tmp_path):
    for index in range(4):
        label = label_array(index)
        write(tmp_path / "train" / "images" / f"c{index}.nii.gz", (1.0 + label).astype(np.float32))
        write(tmp_path / "train" / "labels" / f"c{index}.nii.gz", label)
    with pytest.raises(MissingFileError, match=r"test does not exist .*test_fraction"):
        VolumeFolderDataset("test", root_path=str(tmp_path))
    test = VolumeFolderDataset("test", root_path=str(tmp_path), test_fraction=0.5, normalisation="none")
    train = VolumeFolderDataset("train", root_path=str(tmp_path), test_fraction=0.5, val_fraction=0.0)
    assert len(test.sample_ids) == 2 and sorted(test.sample_ids + train.sample_ids) == ["c0", "c1", "c2", "c3"]
    test.check()


def nnunet_task(root: Path, *, channels: tuple[str, ...] = ("0000", "0001"), v2_json: bool = True) -> Path:
    """nnU-Net's raw layout: imagesTr/<id>_<channel>.nii.gz (T2: 100 + 10 * label; ADC: 500 -
    100 * label) and labelsTr/<id>.nii.gz."""
    for index, case in enumerate(("prostate_00", "prostate_01")):
        label = label_array(index)
        values = {"0000": 100.0 + 10.0 * label, "0001": 500.0 - 100.0 * label, "0002": np.zeros(SHAPE)}
        for channel in channels:
            write(root / "imagesTr" / f"{case}_{channel}.nii.gz", values[channel].astype(np.float32))
        write(root / "labelsTr" / f"{case}.nii.gz", label)
    if v2_json:
        description = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "prostate": 1}, "file_ending": ".nii.gz"}
    else:
        description = {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "prostate"}}
    (root / "dataset.json").write_text(json.dumps(description))
    return root


@pytest.mark.parametrize("v2_json", [True, False])
def test_nnunet_channel_files_are_read_as_one_multi_channel_volume(tmp_path, v2_json):
    root = nnunet_task(tmp_path / "Dataset005_Prostate", v2_json=v2_json)
    spec = DecathlonDataset.describe(root_path=str(root))
    assert (spec.class_names, spec.in_channels, spec.spatial_dims) == (("background", "prostate"), 2, 3)
    data = DecathlonDataset("train", root_path=str(root), val_fraction=0.0, normalisation="none", crop_nonzero=False)
    assert data.sample_ids == ["prostate_00", "prostate_01"]
    assert [path.name for path in data.cases[1].images] == ["prostate_01_0000.nii.gz", "prostate_01_0001.nii.gz"]
    data.check()
    item = data[1]  # the whole volume: no patch_size
    label = label_array(1).astype(np.float32)
    assert item["image"].shape == (2, *SHAPE)
    np.testing.assert_array_equal(item["image"][0].numpy(), 100.0 + 10.0 * label)  # channel 0000 first
    np.testing.assert_array_equal(item["image"][1].numpy(), 500.0 - 100.0 * label)
    np.testing.assert_array_equal(item["label"].numpy(), label_array(1))


def test_channel_files_with_a_gap_or_another_grid_are_data_errors_naming_them(tmp_path):
    gap = nnunet_task(tmp_path / "gap", channels=("0000", "0002"))
    with pytest.raises(DataError, match=r"case 'prostate_00': its image files \['prostate_00_0000.nii.gz', 'prostate_00_0002.nii.gz'\]"):
        DecathlonDataset("train", root_path=str(gap))
    root = nnunet_task(tmp_path / "grid")
    moved = root / "imagesTr" / "prostate_01_0001.nii.gz"
    sitk.WriteImage(image_of(np.ones(SHAPE, dtype=np.float32), spacing=(1.0, 1.0, 3.0)), str(moved))
    data = DecathlonDataset("train", root_path=str(root), val_fraction=0.0)
    with pytest.raises(DataError, match=r"prostate_01_0001.nii.gz: its spacing \[1.0, 1.0, 3.0\] differs") as error:
        data.check()
    assert moved in error.value.paths
    orphan = root / "imagesTr" / "other_0000.nii.gz"
    write(orphan, np.ones(SHAPE, dtype=np.float32))
    with pytest.raises(MissingFileError, match=r"no label for volume .*other_0000.nii.gz: no volume named 'other_0000' \(or 'other'"):
        DecathlonDataset("train", root_path=str(root))


def test_one_release_cut_into_sites_gives_each_site_its_own_cases(tmp_path):
    ids = [f"prostate_{k:02d}" for k in range(7)]
    root = decathlon_without_test_labels(tmp_path / "Task05", ids)
    shards = [splits(root, ("train", "test"), num_shards=3, shard=k, test_fraction=0.3, val_fraction=0.0) for k in (1, 2, 3)]
    held = [sorted(parts["train"] + parts["test"]) for parts in shards]
    assert held == [ids[0:3], ids[3:5], ids[5:7]]  # 7 = 3 + 2 + 2, contiguous by id
    assert [len(parts["test"]) for parts in shards] == [1, 1, 1]  # each site carves its own test case
    with pytest.raises(ValueError, match=r"shard must be between 1 and num_shards=3, not 4"):
        DecathlonDataset.describe(root_path=str(root), num_shards=3, shard=4)
    with pytest.raises(ValueError, match=r"num_shards must be at least 1, not 0"):
        DecathlonDataset("train", root_path=str(root), num_shards=0)


def test_the_synthetic_study_is_written_atomically_as_a_decathlon_task(tmp_path):
    generate_volume_sites(tmp_path, num_sites=1, train_per_site=1, test_per_site=1, seed=3)
    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert files == [
        "Site1/dataset.json",
        "Site1/imagesTr/case_000.nii.gz",
        "Site1/imagesTs/case_001.nii.gz",
        "Site1/labelsTr/case_000.nii.gz",
        "Site1/labelsTs/case_001.nii.gz",
    ]  # no temporary file left behind
    info = read_decathlon_info(tmp_path / "Site1")
    assert (info.class_names, info.modalities) == (("background", "organ", "core"), ("MRI",))
    label = sitk.ReadImage(str(tmp_path / "Site1" / "labelsTr" / "case_000.nii.gz"))
    assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) == {0, 1, 2}
