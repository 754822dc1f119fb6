"""3D volumes through SimpleITK: the Decathlon and folder-pair layouts written as real NIfTI,
MHA and NRRD files, multi-channel volumes, the errors naming the file, preprocessing checked
by hand (resampling, reorientation, cropping, normalisation), seeded 3D patches, distances in
mm, predictions written back on the source grid, and a tiny demo3d run end to end."""

from __future__ import annotations

import csv
import json
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from siteflow.config import PACKAGED_CONFIGS, ConfigError, load_config
from siteflow.core.registry import DATASETS, MODELS
from siteflow.datasets import DataError, DecathlonDataset, VolumeFolderDataset
from siteflow.datasets.volumes.preprocessing import Preprocessing, ct_statistics
from siteflow.engine.predict import predict_run
from siteflow.engine.runner import ExperimentRun
from siteflow.metrics.hausdorff import average_surface_distance, hd95

SPACING = (1.0, 1.0, 2.0)  # SimpleITK's (x, y, z): (width, height, depth) in mm
LPS_TO_RAS = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # a volume stored in RAS voxel order


def volume(array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=None, vector: bool = False) -> sitk.Image:
    """A SimpleITK image of ``array`` (D, H, W[, C]) with that geometry."""
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def ball_label(shape=(8, 16, 16)) -> np.ndarray:
    """uint8 (D, H, W): 1 in a box (2:6, 4:12, 4:12), 3 in its core (3:5, 6:10, 6:10)."""
    label = np.zeros(shape, dtype=np.uint8)
    label[2:6, 4:12, 4:12] = 1
    label[3:5, 6:10, 6:10] = 3
    return label


def write_decathlon(root: Path, cases: dict[str, tuple[sitk.Image, sitk.Image]], *, part: str = "Tr",
                    modality: dict | None = None) -> Path:
    """A Decathlon task folder: labels {0: background, 1: organ, 3: lesion} and ``cases``."""
    for case, (image, label) in cases.items():
        for kind, item in (("images", image), ("labels", label)):
            (root / f"{kind}{part}").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(item, str(root / f"{kind}{part}" / f"{case}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "modality": modality or {"0": "MRI"},
        "labels": {"0": "background", "1": "organ", "3": "lesion"},
    }))
    return root


def intensities(label: np.ndarray) -> np.ndarray:
    """float32 (D, H, W): 100 + 10 * label, and 0 on the outermost slices (cropped away)."""
    values = (100.0 + 10.0 * label).astype(np.float32)
    values[0], values[-1] = 0, 0
    return values


@pytest.fixture
def decathlon(tmp_path) -> Path:
    label = ball_label()
    cases = {name: (volume(intensities(label)), volume(label)) for name in ("a", "b", "c")}
    root = write_decathlon(tmp_path / "Task01", cases)
    write_decathlon(root, {"t": cases["a"]}, part="Ts")
    return root


def test_a_decathlon_item_holds_class_ids_on_the_cropped_grid_with_its_spacing(decathlon):
    spec = DecathlonDataset.describe(root_path=str(decathlon), patch_size=[4, 8, 8])
    assert (spec.class_names, spec.in_channels, spec.patch_size) == (("background", "organ", "lesion"), 1, (4, 8, 8))
    test = DecathlonDataset("test", root_path=str(decathlon), normalisation="none")
    test.check()
    item = test[0]
    assert item["id"] == "t" and item["image"].dtype == torch.float32 and item["label"].dtype == torch.int64
    # crop_nonzero drops the zero first and last slices: 6 of 8 slices
    assert item["image"].shape == (1, 6, 16, 16) and item["label"].shape == (6, 16, 16)
    expected = ball_label()[1:7].astype(np.int64)
    expected[expected == 3] = 2  # label value 3 is the third class
    assert torch.equal(item["label"], torch.from_numpy(expected))
    assert torch.equal(item["image"][0], torch.from_numpy(100.0 + 10.0 * ball_label()[1:7].astype(np.float32)))
    assert item["spacing"].tolist() == [2.0, 1.0, 1.0]  # (depth, height, width)
    train, val = (DecathlonDataset(split, root_path=str(decathlon), val_fraction=0.34).sample_ids for split in ("train", "val"))
    assert len(val) == 1 and sorted(train + val) == ["a", "b", "c"]


def test_a_multi_channel_4d_volume_gives_one_channel_per_modality(tmp_path):
    label = ball_label()
    channels = np.stack([intensities(label), 2 * intensities(label)], axis=0)  # (C, D, H, W)
    four_d = sitk.JoinSeries([volume(c) for c in channels])  # 4D, modalities last
    root = write_decathlon(tmp_path / "Task05", {"a": (four_d, volume(label))}, part="Ts", modality={"0": "T2", "1": "ADC"})
    assert DecathlonDataset.describe(root_path=str(root)).in_channels == 2
    item = DecathlonDataset("test", root_path=str(root), normalisation="none", crop_nonzero=False)[0]
    assert item["image"].shape == (2, 8, 16, 16)
    assert torch.equal(item["image"][1], 2 * item["image"][0])
    assert float(item["image"][0, 4, 8, 8]) == 130.0  # the lesion: 100 + 10 * 3


def test_folder_pairs_read_mha_and_nrrd_and_a_vector_image(tmp_path):
    label = ball_label().clip(0, 1)
    values = intensities(label)
    for part, name, suffix in (("train", "x", ".mha"), ("train", "y", ".nrrd"), ("test", "z", ".nii")):
        (tmp_path / part / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / part / "labels").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(volume(np.stack([values, -values], axis=-1), vector=True), str(tmp_path / part / "images" / f"{name}{suffix}"))
        sitk.WriteImage(volume(label), str(tmp_path / part / "labels" / f"{name}.nii.gz"))
    train = VolumeFolderDataset("train", root_path=str(tmp_path), in_channels=2, val_fraction=0.0, normalisation="none", crop_nonzero=False)
    assert train.sample_ids == ["x", "y"]
    item = train[1]
    assert item["image"].shape == (2, 8, 16, 16) and torch.equal(item["image"][1], -item["image"][0])
    assert set(item["label"].unique().tolist()) == {0, 1}


def write_dicom_series(folder: Path, image: sitk.Image) -> None:
    """``image`` (int16, 3D) as a DICOM series: one file per slice, with its position. ITK's
    DICOM writer sets the process's locale to "C" (Python's text encoding then ASCII, for every
    later test in this process): it is restored afterwards."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(folder, image)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(folder: Path, image: sitk.Image) -> None:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        part = image[:, :, k]
        tags = {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1",  # the series
            "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0013": str(k),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "\\".join(map(str, image.GetSpacing()[1::-1])),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for tag, value in tags.items():
            part.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(part)


def test_a_dicom_series_folder_is_a_volume_and_an_unreadable_one_is_named(tmp_path):
    label = ball_label().clip(0, 1)
    geometry = {"spacing": (0.5, 0.7, 2.0), "origin": (1.0, 2.0, 3.0)}
    values = (100 + 10 * label).astype(np.int16)
    (tmp_path / "test" / "labels").mkdir(parents=True)
    write_dicom_series(tmp_path / "test" / "images" / "ct1", volume(values, **geometry))
    sitk.WriteImage(volume(label, **geometry), str(tmp_path / "test" / "labels" / "ct1.nii.gz"))
    test = VolumeFolderDataset("test", root_path=str(tmp_path), normalisation="none")
    item = test[0]
    assert item["id"] == "ct1" and item["spacing"].tolist() == [2.0, 0.7, 0.5]
    assert torch.equal(item["image"][0], torch.from_numpy(values.astype(np.float32)))
    junk = tmp_path / "test" / "images" / "ct2"
    junk.mkdir()
    (junk / "0.dcm").write_bytes(b"no DICOM here")
    sitk.WriteImage(volume(label, **geometry), str(tmp_path / "test" / "labels" / "ct2.nii.gz"))
    with pytest.raises(DataError, match=f"DICOM series {junk}: the folder holds no readable DICOM series"):
        VolumeFolderDataset("test", root_path=str(tmp_path), normalisation="none").check()


def test_bad_volumes_are_data_errors_naming_the_file(tmp_path, decathlon):
    label = ball_label()
    shifted = volume(label, origin=(0.0, 0.0, 5.0))
    bad_values = label.copy()
    bad_values[0, 0, 0] = 2  # no class has label value 2
    flat = sitk.GetImageFromArray(intensities(label)[3])  # a 2D image
    root = write_decathlon(tmp_path / "Bad", {
        "geometry": (volume(intensities(label)), shifted),
        "values": (volume(intensities(label)), volume(bad_values)),
        "flat": (flat, volume(label)),
    })
    dataset = DecathlonDataset("train", root_path=str(root), val_fraction=0.0)
    with pytest.raises(DataError) as error:
        dataset.check()
    message = str(error.value)
    assert "3 of 3 samples have bad files" in message
    assert f"label {root / 'labelsTr' / 'geometry.nii.gz'}: its origin [0.0, 0.0, 5.0] differs" in message
    assert f"label {root / 'labelsTr' / 'values.nii.gz'} holds the values [2], which are no class's" in message
    assert f"volume {root / 'imagesTr' / 'flat.nii.gz'} is a 2D image" in message
    assert set(error.value.paths) == {root / "labelsTr" / "geometry.nii.gz", root / "labelsTr" / "values.nii.gz", root / "imagesTr" / "flat.nii.gz"}
    (root / "imagesTr" / "broken.nii.gz").write_bytes(b"not a volume")
    (root / "labelsTr" / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(DataError, match=f"volume {root / 'imagesTr' / 'broken.nii.gz'} cannot be read by SimpleITK"):
        DecathlonDataset("train", root_path=str(root), val_fraction=0.0)[0]


def test_resampling_reorientation_and_normalisation_by_hand():
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 4, 4)).copy()  # value = slice index
    image, label = volume(ramp, spacing=(1.0, 1.0, 1.0)), volume(np.zeros((8, 4, 4), np.uint8), spacing=(1.0, 1.0, 1.0))
    to_two = Preprocessing((2.0, 1.0, 1.0), "linear", None, "none", None, False)
    values, labels, grid = to_two([image], label)
    # 4 slices of 2 mm centred between two of the old ones: linear gives their means
    assert values.shape == (1, 4, 4, 4) and labels.shape == (4, 4, 4)
    np.testing.assert_allclose(values[0, :, 0, 0], [0.5, 2.5, 4.5, 6.5])
    assert grid.GetSpacing() == (1.0, 1.0, 2.0)

    columns = np.broadcast_to(np.arange(4, dtype=np.float32)[None, None, :], (2, 3, 4)).copy()
    ras = volume(columns, spacing=(1.0, 1.0, 1.0), direction=LPS_TO_RAS)  # x runs right to left
    turned, _, grid = Preprocessing(None, "linear", "LPS", "none", None, False)([ras], volume(np.zeros((2, 3, 4), np.uint8), spacing=(1.0, 1.0, 1.0), direction=LPS_TO_RAS))
    np.testing.assert_array_equal(turned[0, 0, 0], [3, 2, 1, 0])
    assert grid.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    mri = Preprocessing(None, "linear", None, "mri", None, False)
    assert np.allclose(mri.normalise(np.array([0.0, 1.0, 3.0], np.float32), 0), [0.0, -1.0, 1.0])  # mean 2, std 1 of the non-zero
    ct = Preprocessing(None, "linear", None, "ct", (0.0, 100.0), False, ct_statistics=((0.0, 100.0, 50.0, 50.0),))
    assert np.allclose(ct.normalise(np.array([-500.0, 0.0, 100.0, 900.0], np.float32), 0), [-1.0, -1.0, 1.0, 1.0])  # clipped to 0, 0, 100, 100
    (low, high, mean, std), = ct_statistics([np.array([0.0, 10.0, 20.0, 30.0, 1000.0])], (0.0, 100.0))
    assert (low, high, mean) == (0.0, 100.0, 32.0) and std == pytest.approx(np.std([0, 10, 20, 30, 100]))


def test_ct_is_normalised_with_the_foreground_statistics_of_the_training_cases(tmp_path):
    label = ball_label()  # foreground: 224 voxels of 110, 32 of 130 (the core)
    cases = {name: (volume(intensities(label)), volume(label)) for name in ("a", "b")}
    root = write_decathlon(tmp_path / "CT", cases, modality={"0": "CT"})
    write_decathlon(root, {"t": cases["a"]}, part="Ts", modality={"0": "CT"})
    test = DecathlonDataset("test", root_path=str(root), crop_nonzero=False)  # normalisation auto: ct
    mean = (224 * 110 + 32 * 130) / 256  # 112.5, and the percentiles 0.5 and 99.5 are 110 and 130
    std = np.sqrt((224 * (110 - mean) ** 2 + 32 * (130 - mean) ** 2) / 256)
    (statistics,) = test.preprocessing.ct_statistics
    assert statistics == pytest.approx((110.0, 130.0, mean, std))
    image = test[0]["image"][0]
    assert float(image[4, 0, 0]) == pytest.approx((110 - mean) / std, rel=1e-5)  # 100, clipped to 110
    assert float(image[4, 8, 8]) == pytest.approx((130 - mean) / std, rel=1e-5)  # the core


def test_three_d_patches_are_seeded_and_centred_on_foreground(decathlon):
    train = DecathlonDataset("train", root_path=str(decathlon), val_fraction=0.0, patch_size=[2, 4, 4],
                             foreground_share=1.0, augmentation="default")
    first, again, other = train[(0, 7)], train[(0, 7)], train[(0, 8)]
    assert first["image"].shape == (1, 2, 4, 4) and first["label"].shape == (2, 4, 4)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])
    for seed in range(10):
        assert train[(1, seed)]["label"].any()  # every patch holds foreground (share 1)
    centre = train[0]  # an int index: the centre patch, not augmented
    assert torch.equal(centre["label"], torch.from_numpy(np.array(train._decoded(0).label[2:4, 6:10, 6:10])))


def test_patch_size_option_errors_name_the_key(decathlon):
    with pytest.raises(ValueError, match=r"patch_size must be \[depth, height, width\] > 0, not \[8, 8\]"):
        DecathlonDataset.describe(root_path=str(decathlon), patch_size=[8, 8])
    with pytest.raises(ValueError, match="orientation must be three letters"):
        DecathlonDataset.describe(root_path=str(decathlon), orientation="RAA")
    with pytest.raises(ValueError, match="img_size is for 2D images"):
        DecathlonDataset.describe(root_path=str(decathlon), img_size=[8, 8])
    with pytest.raises(DataError, match=r"volume .*a\.nii\.gz is \[6, 16, 16\] voxels .* smaller than patch_size \[7, 8, 8\]"):
        DecathlonDataset("train", root_path=str(decathlon), patch_size=[7, 8, 8]).check()


def test_distances_are_in_mm_of_the_spacing():
    pred, truth = torch.zeros(1, 6, 6, 6, dtype=torch.long), torch.zeros(1, 6, 6, 6, dtype=torch.long)
    pred[0, 1, 3, 3], truth[0, 3, 3, 3] = 1, 1  # two slices apart along depth
    spacing = torch.tensor([[3.0, 1.0, 1.0]])
    assert hd95(pred, truth, 2, spacing=spacing).item() == pytest.approx(6.0)
    assert average_surface_distance(pred, truth, 2, spacing=spacing).item() == pytest.approx(6.0)
    assert average_surface_distance(pred, truth, 2).item() == pytest.approx(2.0)


def test_a_prediction_goes_back_to_the_source_grid(tmp_path):
    label = ball_label()
    source_label = volume(label, spacing=(0.8, 0.8, 2.5), origin=(10.0, -4.0, 3.0), direction=LPS_TO_RAS)
    source_image = volume(intensities(label), spacing=(0.8, 0.8, 2.5), origin=(10.0, -4.0, 3.0), direction=LPS_TO_RAS)
    root = write_decathlon(tmp_path / "Task", {"a": (source_image, source_label)}, part="Ts")
    test = DecathlonDataset("test", root_path=str(root), orientation="LPS")  # turned and cropped
    item = test[0]
    back = test.on_source_grid("a", item["label"].numpy())
    for name in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(back, name)() == pytest.approx(getattr(source_label, name)()), name
    expected = label.copy()
    expected[expected == 3] = 2  # class ids
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), expected)


def tiny_demo3d(tmp_path: Path) -> Path:
    """demo3d/local scaled down: two sites of three training and one test case, one epoch."""
    raw = yaml.safe_load((PACKAGED_CONFIGS / "demo3d" / "local.yaml").read_text())
    raw["common"]["dataset"]["kwargs"].update(root_path=str(tmp_path / "data"), num_sites=2, train_per_site=3, test_per_site=1, val_fraction=0.34)
    raw["common"]["model"]["kwargs"] = {"spatial_dims": 3, "base_channels": 4, "depth": 2}
    raw["common"]["train"]["epochs"] = 1
    raw["all_tasks_datasets"] = raw["all_tasks_datasets"][:2]
    raw["current_tasks"] = {"task_ids": [1, 2], "task_confs": {1: {"checkpoint": {"save": "task_1"}}, 2: {"checkpoint": {"save": "task_2"}}}}
    path = tmp_path / "local3d.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["local", "joint", "sequential", "fedavg", "fedbn"])
def test_the_demo3d_configs_validate(tmp_path, name):
    raw = yaml.safe_load((PACKAGED_CONFIGS / "demo3d" / f"{name}.yaml").read_text())
    raw["common"]["dataset"]["kwargs"]["root_path"] = str(tmp_path / "data")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.model.kwargs["spatial_dims"] == 3 and len(config.sites) == 3


def test_a_dataset_option_of_the_wrong_type_is_a_config_error(tmp_path):
    raw = yaml.safe_load(tiny_demo3d(tmp_path).read_text())
    raw["common"]["dataset"]["kwargs"]["spacing"] = "fine"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"kwargs.spacing: expected a list or null, got 'fine'"):
        load_config(path)


def test_without_a_cache_an_item_is_the_same(decathlon):
    cached = DecathlonDataset("val", root_path=str(decathlon), orientation="LPS", spacing=[2.0, 2.0, 2.0])
    fresh = DecathlonDataset("val", root_path=str(decathlon), orientation="LPS", spacing=[2.0, 2.0, 2.0], cache="none")
    for key in ("image", "label", "spacing"):
        assert torch.equal(cached[0][key], fresh[0][key]), key
    assert fresh[0]["spacing"].tolist() == [2.0, 2.0, 2.0] and fresh[0]["label"].shape == (6, 8, 8)  # 16 mm of 2 mm voxels


def test_relay_on_volumes_is_refused_when_the_config_is_validated(tmp_path):
    raw = yaml.safe_load(tiny_demo3d(tmp_path).read_text())
    raw["common"]["strategy"] = {"name": "relay"}
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"common.strategy: relay needs 2D training inputs .* got size \(16, 32, 32\)"):
        load_config(path)


@pytest.mark.slow
def test_demo3d_trains_and_writes_predictions_on_the_source_grid(tmp_path):
    config = load_config(tiny_demo3d(tmp_path))
    ExperimentRun(config, tmp_path / "run").execute()
    output = predict_run(config, tmp_path / "run", save_nifti=True)
    with open(output / "samples.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2  # models x test sites (one case each)
    assert {"hd95_organ", "asd_core", "dice_mean"} <= set(rows[0])
    assert all(0.0 <= float(row["dice_mean"]) <= 1.0 and float(row["hd95_mean"]) >= 0.0 for row in rows)
    test = DATASETS.get("synthetic_volumes")("test", **config.sites[1].dataset.kwargs)
    source = sitk.ReadImage(str(test.cases[0].label))
    written = sitk.ReadImage(str(output / "nifti" / "site1" / "site2" / f"{test.cases[0].id}_pred.nii.gz"))
    for name in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(written, name)() == pytest.approx(getattr(source, name)()), name
    assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1, 2}


def test_a_2d_model_on_volumes_is_refused_at_validation_naming_both_dims(tmp_path):
    raw = yaml.safe_load(tiny_demo3d(tmp_path).read_text())
    raw["common"]["model"]["kwargs"]["spatial_dims"] = 2
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"common.model.kwargs.spatial_dims: model 'unet' is 2D .* site 'site1' holds 3D volumes .*set spatial_dims: 3"):
        load_config(path)


class FlatNet(torch.nn.Module):
    """A 2D model without a ``spatial_dims`` option: (N, C_in, H, W) -> logits (N, K, H, W)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_a_3d_model_on_images_is_refused_and_a_2d_only_model_on_volumes_names_the_model(tmp_path):
    raw = yaml.safe_load((PACKAGED_CONFIGS / "demo" / "local.yaml").read_text())
    raw["common"]["dataset"]["kwargs"]["root_path"] = str(tmp_path / "data")
    raw["common"]["model"].setdefault("kwargs", {})["spatial_dims"] = 3
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"common.model.kwargs.spatial_dims: model 'unet' is 3D .* holds 2D images .*set spatial_dims: 2"):
        load_config(path)
    raw = yaml.safe_load(tiny_demo3d(tmp_path).read_text())
    raw["common"]["model"] = {"name": "flat_net"}
    path.write_text(yaml.safe_dump(raw))
    with MODELS.registered("flat_net", FlatNet), pytest.raises(
        ConfigError, match=r"common.model.name: model 'flat_net' is 2D .* holds 3D volumes .*choose a 3D model"
    ):
        load_config(path)


def test_a_site_of_images_beside_sites_of_volumes_is_refused(tmp_path):
    raw = yaml.safe_load(tiny_demo3d(tmp_path).read_text())
    volumes = raw["common"]["dataset"].pop("kwargs")
    raw["all_tasks_datasets"][0]["kwargs"].update(volumes)
    raw["all_tasks_datasets"][1].update(name="synthetic_vessels", kwargs={"root_path": str(tmp_path / "vessels"), "folder": "DRIVE"})
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"all_tasks_datasets\[1\]: site 'site2' holds .* in 2D, site 'site1' holds .* in 3D"):
        load_config(path)
