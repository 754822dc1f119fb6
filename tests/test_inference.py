"""siteflow-infer on small real files written here: 2D images of several formats and modes, an
oblique anisotropic NIfTI volume, a DICOM series (DICOM SEG out), bad inputs. The networks are
untrained (seeded): what is tested is that each input is preprocessed as the training data was
and that the prediction comes back on the input's own grid."""

from __future__ import annotations

import csv
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from siteflow.config import InferenceConfig
from siteflow.datasets.files import scaled_tensor, unit_pixels
from siteflow.datasets.image_files import read_pixels
from siteflow.datasets.inputs import ImageInput
from siteflow.datasets.volumes.inputs import VolumeInput
from siteflow.datasets.volumes.preprocessing import Preprocessing
from siteflow.inference import InputError, ModelRecipe, Predictor, check_output_folder, list_inputs, run_inference
from siteflow.tasks.segmentation.inference import resize_spatial

CLASSES = ("background", "a", "b")


def seg_recipe(input_preprocessing, dims: int = 2, **inference) -> ModelRecipe:
    return ModelRecipe("test-model", "segmentation", CLASSES, input_preprocessing, InferenceConfig(**inference), "unet",
                       {"base_channels": 4, "depth": 2, "spatial_dims": dims})


def seeded_network(recipe: ModelRecipe) -> torch.nn.Module:
    torch.manual_seed(0)
    network = recipe.build_network()
    with torch.no_grad():  # a visible, input-dependent prediction: bias the head towards no class
        for parameter in network.parameters():
            parameter.mul_(3.0)
    return network.eval()


def infer(recipe: ModelRecipe, inputs: list[Path], output: Path, **options):
    items = list_inputs(inputs, recipe.spatial_dims)
    check_output_folder(output, inputs, items, recipe)
    predictor = Predictor(recipe, seeded_network(recipe), **options)
    return run_inference(predictor, items, output, progress=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- 2D images -----------------------------------------------------------------------------


def write_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Images of several formats and pixel modes, each of its own size; name -> (H, W)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    sub = folder / "more"
    sub.mkdir()
    grey8 = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    Image.fromarray(grey8, mode="L").save(folder / "grey8.png")
    grey16 = rng.integers(0, 65536, (37, 29), dtype=np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    rgb = rng.integers(0, 256, (33, 35, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(folder / "colour.jpg", quality=95)
    Image.fromarray(rgb, mode="RGB").save(sub / "colour.tif")
    Image.fromarray(rgb[:, :30], mode="RGB").save(sub / "portable.ppm")
    Image.fromarray(rgb, mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    return {"grey8": (30, 41), "grey16": (37, 29), "colour": (33, 35), "more/colour": (33, 35), "more/portable": (33, 30), "palette": (33, 35)}


@pytest.mark.parametrize("img_size", [(32, 32), None])
def test_2d_images_of_every_mode_are_preprocessed_as_training_and_predicted_at_their_own_size(tmp_path, img_size):
    sizes = write_images(tmp_path / "scans")
    recipe = seg_recipe(ImageInput(3, img_size, (-1.0, 1.0)))
    report = infer(recipe, [tmp_path / "scans"], tmp_path / "out", probabilities=True)
    assert report.failures == []
    network = seeded_network(recipe)
    rows = {row["input"]: row for row in read_csv(tmp_path / "out" / "predictions.csv")}
    assert len(rows) == len(sizes)
    for name, size in sizes.items():
        source = next(p for p in (tmp_path / "scans").rglob("*") if p.is_file() and str(p.relative_to(tmp_path / "scans").with_suffix("")) == name)
        labels = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert labels.shape == size
        # by hand: the dataset's functions, the network, logits resized to the native size, argmax
        image = scaled_tensor(unit_pixels(read_pixels(source, 3), img_size), (-1.0, 1.0))
        with torch.no_grad():
            logits = resize_spatial(network(image[None]), size)
        np.testing.assert_array_equal(labels, logits.argmax(1)[0].numpy())
        assert 0 < (labels > 0).sum() < labels.size  # not a blank map
        probabilities = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{name}_probabilities.nii.gz")))
        assert probabilities.shape == (*size, 3)
        np.testing.assert_allclose(probabilities, torch.softmax(logits, 1)[0].permute(1, 2, 0).numpy(), atol=1e-6)
        row = rows[str(source)]
        assert [int(row[f"pixels_{c}"]) for c in CLASSES] == np.bincount(labels.ravel(), minlength=3).tolist()
        assert row["mm2_a"] == ""  # a PNG's pixel size is unknown
        assert row["model"] == "test-model"


def test_image_input_equals_the_datasets_test_item(tmp_path):
    from siteflow.core.registry import DATASETS

    options = {"root_path": str(tmp_path / "data"), "folder": "Domain1", "num_sites": 1, "train_per_site": 2,
               "test_per_site": 2, "native_size": [40, 48], "img_size": [32, 32], "val_fraction": 0.5}
    dataset_class = DATASETS.get("synthetic_fundus")
    test = dataset_class("test", **options)
    preprocessing = dataset_class.input_preprocessing(**options)
    for row, sample in enumerate(test.samples):
        image, native = preprocessing(sample.image)
        item = test[row]
        torch.testing.assert_close(image, item["image"], rtol=0, atol=0)
        assert tuple(native) == tuple(item["label"].shape)


def test_a_sliding_window_model_runs_as_configured(tmp_path):
    sizes = write_images(tmp_path / "scans")
    recipe = seg_recipe(ImageInput(1, None, (0.0, 1.0)), roi_size=(16, 16), overlap=0.25, blend="constant", sw_batch_size=2)
    report = infer(recipe, [tmp_path / "scans" / "grey8.png"], tmp_path / "out")
    assert report.failures == []
    from monai.inferers import sliding_window_inference

    image = scaled_tensor(unit_pixels(read_pixels(tmp_path / "scans" / "grey8.png", 1), None), (0.0, 1.0))
    with torch.no_grad():
        logits = sliding_window_inference(image[None], (16, 16), 2, seeded_network(recipe), overlap=0.25, mode="constant")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "grey8.png")), logits.argmax(1)[0].numpy())
    assert sizes["grey8"] == logits.shape[2:]


# --- volumes ---------------------------------------------------------------------------------


def oblique_volume(size=(20, 18, 9), spacing=(0.8, 1.1, 2.5), channels: int = 1) -> sitk.Image:
    """A volume (x, y, z sizes) with anisotropic spacing, an origin and an oblique direction."""
    rng = np.random.default_rng(1)
    values = rng.normal(100, 30, (size[2], size[1], size[0], channels)).astype(np.float32)
    values[2:6, 4:12, 5:15] += 200
    image = sitk.GetImageFromArray(values[..., 0] if channels == 1 else values, isVector=channels > 1)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2), np.cos(angle / 2)]])
    image.SetDirection((rotation @ tilt).ravel().tolist())
    return image


VOLUME_PREPROCESSING = VolumeInput(1, Preprocessing((2.0, 1.5, 1.5), "linear", "RAS", "mri", None, True))


def test_a_volume_comes_back_on_its_own_oblique_anisotropic_grid(tmp_path):
    (tmp_path / "scans").mkdir()
    source = oblique_volume()
    sitk.WriteImage(source, str(tmp_path / "scans" / "case.nii.gz"))
    recipe = seg_recipe(VOLUME_PREPROCESSING, dims=3, roi_size=(8, 8, 8), overlap=0.5)
    report = infer(recipe, [tmp_path / "scans"], tmp_path / "out", probabilities=True)
    assert report.failures == []
    labels = sitk.ReadImage(str(tmp_path / "out" / "case.nii.gz"))
    probabilities = sitk.ReadImage(str(tmp_path / "out" / "case_probabilities.nii.gz"))
    for written in (labels, probabilities):
        assert written.GetSize() == source.GetSize()
        np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    assert probabilities.GetNumberOfComponentsPerPixel() == 3
    counts = np.bincount(sitk.GetArrayFromImage(labels).ravel(), minlength=3)
    (row,) = read_csv(tmp_path / "out" / "predictions.csv")
    assert [int(row[f"voxels_{c}"]) for c in CLASSES] == counts.tolist()
    assert float(row["mm3_a"]) == pytest.approx(counts[1] * 0.8 * 1.1 * 2.5, rel=1e-5)


def test_volume_channels_and_dimensions_that_are_not_the_models_fail_alone(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    sitk.WriteImage(oblique_volume(), str(scans / "good.nii.gz"))
    sitk.WriteImage(oblique_volume(channels=2), str(scans / "two_channels.nii.gz"))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / "flat.png")
    (scans / "broken.nii.gz").write_bytes(b"not a volume")
    recipe = seg_recipe(VOLUME_PREPROCESSING, dims=3, roi_size=(8, 8, 8))
    report = infer(recipe, [scans], tmp_path / "out")
    reasons = {path.name: reason for path, reason in report.failures}
    assert set(reasons) == {"two_channels.nii.gz", "flat.png", "broken.nii.gz"}
    assert "has 2 channels; the model takes 1" in reasons["two_channels.nii.gz"]
    assert "is a 2D image; this model takes volumes" in reasons["flat.png"]
    assert "broken.nii.gz cannot be read" in reasons["broken.nii.gz"]
    assert [row["input"] for row in read_csv(tmp_path / "out" / "predictions.csv")] == [str(scans / "good.nii.gz")]
    failures = read_csv(tmp_path / "out" / "failures.csv")
    assert {Path(row["input"]).name for row in failures} == set(reasons)
    assert not (tmp_path / "out" / "two_channels.nii.gz").exists()


def test_a_2d_model_refuses_a_volume_and_a_corrupt_image_and_goes_on(tmp_path):
    scans = tmp_path / "scans"
    write_images(scans)
    sitk.WriteImage(oblique_volume(), str(scans / "volume.nii.gz"))
    (scans / "cut.png").write_bytes((scans / "grey8.png").read_bytes()[:60])
    report = infer(seg_recipe(ImageInput(3, (32, 32), (-1.0, 1.0))), [scans], tmp_path / "out")
    reasons = {path.name: reason for path, reason in report.failures}
    assert set(reasons) == {"volume.nii.gz", "cut.png"}
    assert "is a volume; this model segments or classifies 2D images" in reasons["volume.nii.gz"]
    assert "cut.png" in reasons["cut.png"] and "truncated or corrupt" in reasons["cut.png"]
    assert len(read_csv(tmp_path / "out" / "predictions.csv")) == 6


def test_an_output_folder_that_would_overwrite_or_mix_with_the_inputs_is_refused(tmp_path):
    scans = tmp_path / "scans"
    write_images(scans)
    recipe = seg_recipe(ImageInput(3, (32, 32), (-1.0, 1.0)))
    for output in (scans, scans / "out"):
        with pytest.raises(InputError, match=f"output folder {output} is inside input folder {scans}"):
            infer(recipe, [scans], output)
    with pytest.raises(InputError, match="would overwrite input"):
        infer(recipe, [scans / "grey8.png"], scans)
    with pytest.raises(InputError, match="does not exist"):
        list_inputs([tmp_path / "nowhere"], 2)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="notes.txt is not an image or volume file"):
        list_inputs([tmp_path / "notes.txt"], 2)
    assert not (scans / "out").exists()


# --- DICOM series -----------------------------------------------------------------------------


def write_ct_series(folder: Path, *, slices: int = 6, rows: int = 16, columns: int = 20, series_uid: str | None = None,
                    study_uid: str | None = None) -> list[pydicom.Dataset]:
    """A CT series of ``slices`` files (written in shuffled order); returns their datasets."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    study_uid, series_uid, frame = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    datasets = []
    for index in rng.permutation(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P1", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "A1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, int(index) + 1
        ds.Manufacturer = "test"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -8.0, float(index) * 2.5]
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.7], 2.5
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        pixels = rng.normal(0, 50, (rows, columns)).astype(np.int16)
        pixels[4:10, 5:14] += 300 if 1 <= index <= 4 else 0
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{series_uid[-8:]}_{rng.integers(1 << 30)}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return datasets


def test_a_dicom_series_gets_a_dicom_seg_that_references_its_instances(tmp_path):
    sources = write_ct_series(tmp_path / "scans" / "patient1_ct")
    recipe = seg_recipe(VolumeInput(1, Preprocessing(None, "linear", None, "mri", None, False)), dims=3, roi_size=(4, 8, 8))
    report = infer(recipe, [tmp_path / "scans"], tmp_path / "out")
    assert report.failures == []
    seg_path = tmp_path / "out" / "patient1_ct.seg.dcm"
    dataset = pydicom.dcmread(seg_path)
    assert dataset.Modality == "SEG"
    assert dataset.StudyInstanceUID == sources[0].StudyInstanceUID
    assert dataset.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {item.ReferencedSOPInstanceUID for series in dataset.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    segmentation = hd.seg.segread(seg_path)
    assert [segmentation.get_segment_description(n).segment_label for n in (1, 2)] == ["a", "b"]
    # the SEG's frames hold the label map written as NIfTI, slice by slice in the sources' positions
    labels = sitk.ReadImage(str(tmp_path / "out" / "patient1_ct.nii.gz"))
    array = sitk.GetArrayFromImage(labels)
    by_position = sorted(sources, key=lambda ds: ds.ImagePositionPatient[2])
    volume = segmentation.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in by_position], combine_segments=True, relabel=True
    )
    np.testing.assert_array_equal(volume, array)
    assert labels.GetSpacing() == pytest.approx((0.7, 0.9, 2.5))
    (row,) = read_csv(tmp_path / "out" / "predictions.csv")
    assert row["outputs"] == "patient1_ct.nii.gz;patient1_ct.seg.dcm"


def test_a_folder_with_several_dicom_series_is_refused_naming_it(tmp_path):
    folder = tmp_path / "scans" / "mixed"
    study = generate_uid()
    write_ct_series(folder, slices=3, study_uid=study)
    write_ct_series(folder, slices=3, study_uid=study)
    recipe = seg_recipe(VolumeInput(1, Preprocessing(None, "linear", None, "mri", None, False)), dims=3, roi_size=(4, 8, 8))
    report = infer(recipe, [tmp_path / "scans"], tmp_path / "out")
    ((path, reason),) = report.failures
    assert path == folder
    assert f"DICOM folder {folder} holds 2 series" in reason and "one folder per series" in reason
    assert not any((tmp_path / "out").glob("mixed*"))


# --- a multi-label classifier -------------------------------------------------------------------


def test_a_classifier_writes_probabilities_and_threshold_decisions(tmp_path):
    from siteflow.datasets.chest_xray.inputs import XrayInput

    scans = tmp_path / "scans"
    write_images(scans)
    recipe = ModelRecipe("cxr", "multilabel", ("cardiomegaly", "edema", "effusion"), XrayInput(1, (32, 32), (0.0, 1.0)),
                         InferenceConfig(mode="whole"), "resnet_classifier", {"depth": 18}, labels=("cardiomegaly", "effusion"),
                         thresholds=(0.3, 0.5, 0.7))
    torch.manual_seed(0)
    network = recipe.build_network()
    items = list_inputs([scans], 2)
    report = run_inference(Predictor(recipe, network), items, tmp_path / "out", progress=False)
    assert report.failures == []
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == ["input", "model", "p_cardiomegaly", "p_effusion", "positive_cardiomegaly", "positive_effusion"]
    from siteflow.datasets.chest_xray.images import read_xray, xray_tensor

    for row in rows:
        image = xray_tensor(read_xray(Path(row["input"])), (32, 32), (0.0, 1.0), 1)
        with torch.no_grad():
            scores = torch.sigmoid(network(image[None]))[0].double().numpy()
        assert float(row["p_cardiomegaly"]) == pytest.approx(scores[0], abs=1e-6)
        assert float(row["p_effusion"]) == pytest.approx(scores[2], abs=1e-6)
        assert int(row["positive_cardiomegaly"]) == int(scores[0] >= 0.3)
        assert int(row["positive_effusion"]) == int(scores[2] >= 0.7)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.csv"]


def test_two_inputs_whose_outputs_would_share_a_name_are_refused(tmp_path):
    scans = tmp_path / "scans"
    write_images(scans)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scans / "more" / "grey8.png")
    recipe = seg_recipe(ImageInput(3, (32, 32), (-1.0, 1.0)))
    with pytest.raises(InputError, match=r"inputs .*scans/grey8.png and .*scans/more/grey8.png would both write grey8.png"):
        infer(recipe, [scans / "grey8.png", scans / "more" / "grey8.png"], tmp_path / "out")
    infer(recipe, [scans], tmp_path / "out")  # from their folder, their outputs keep their sub-folders
    assert (tmp_path / "out" / "grey8.png").is_file() and (tmp_path / "out" / "more" / "grey8.png").is_file()
