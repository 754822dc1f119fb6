"""siteflow-export round trips: the exported folder loads back (digests checked), and on the
same inputs its TorchScript, ONNX Runtime and MONAI bundle predictions equal the PyTorch
model's (label maps identical, probabilities within TOLERANCE), for a 2D U-Net, a 3D U-Net
with sliding windows and a multi-label classifier."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from siteflow.config import InferenceConfig
from siteflow.core.atomic import OutputError
from siteflow.datasets.chest_xray.inputs import XrayInput
from siteflow.datasets.inputs import ImageInput
from siteflow.export import export_model
from siteflow.export.bundle import load_torchscript
from siteflow.export.graphs import onnx_network
from siteflow.inference import LoadedModel, ModelRecipe, ModelSourceError, Predictor, from_export, list_inputs, read_input, run_inference
from test_inference import VOLUME_PREPROCESSING, oblique_volume, seeded_network, write_images

TOLERANCE = 1e-4
"""Largest difference of a probability between an exported graph and the PyTorch model."""

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")]


def recipes() -> dict[str, ModelRecipe]:
    unet = {"base_channels": 4, "depth": 2}
    classes = ("background", "a", "b")
    return {
        "unet2d": ModelRecipe("unet2d", "segmentation", classes, ImageInput(3, (32, 32), (-1.0, 1.0)), InferenceConfig(), "unet", unet),
        "unet3d": ModelRecipe("unet3d", "segmentation", classes, VOLUME_PREPROCESSING,
                              InferenceConfig(roi_size=(8, 16, 16), overlap=0.5), "unet", {**unet, "spatial_dims": 3}),
        "classifier": ModelRecipe("classifier", "multilabel", ("x", "y"), XrayInput(1, (32, 32), (0.0, 1.0)),
                                  InferenceConfig(mode="whole"), "resnet_classifier", {"depth": 18}, thresholds=(0.4, 0.6)),
    }


@pytest.fixture(scope="module", params=["unet2d", "unet3d", "classifier"])
def exported(request, tmp_path_factory):
    """(kind, the LoadedModel, its export folder, the inputs folder)."""
    folder = tmp_path_factory.mktemp(request.param)
    recipe = recipes()[request.param]
    model = LoadedModel(recipe, seeded_network(recipe), {"config": "test", "sites": [{"site": "s1", "samples": 4}]})
    scans = folder / "scans"
    if recipe.spatial_dims == 3:
        scans.mkdir()
        sitk.WriteImage(oblique_volume(), str(scans / "case.nii.gz"))
        sitk.WriteImage(oblique_volume(size=(23, 15, 11), spacing=(1.2, 0.7, 1.9)), str(scans / "other.mha"))
    else:
        write_images(scans)
    return request.param, model, export_model(model, folder / "export"), scans


def predictions(recipe, network, scans, **options):
    predictor = Predictor(recipe, network, probabilities=recipe.task == "segmentation", **options)
    return [predictor(read_input(item, recipe)) for item in list_inputs([scans], recipe.spatial_dims)]


def assert_same(found, expected):
    for mine, reference in zip(found, expected, strict=True):
        if reference.scores is not None:
            np.testing.assert_allclose(mine.scores, reference.scores, atol=TOLERANCE, rtol=0)
            continue
        labels = [sitk.GetArrayFromImage(p.label_map) if isinstance(p.label_map, sitk.Image) else p.label_map for p in (mine, reference)]
        np.testing.assert_array_equal(*labels)
        probabilities = [sitk.GetArrayFromImage(p.probabilities) if isinstance(p.probabilities, sitk.Image) else p.probabilities
                         for p in (mine, reference)]
        np.testing.assert_allclose(*probabilities, atol=TOLERANCE, rtol=0)


def test_the_folder_loads_back_with_its_recipe_and_weights(exported):
    kind, model, folder, _ = exported
    for name in ("MODEL_CARD.md", "model_card.json", "models/model.safetensors", "models/model.ts", "models/model.onnx",
                 "configs/inference.json", "configs/metadata.json"):
        assert (folder / name).is_file(), name
    loaded = from_export(folder)
    assert loaded.recipe == model.recipe
    for name, tensor in model.network.state_dict().items():
        torch.testing.assert_close(loaded.network.state_dict()[name], tensor, rtol=0, atol=0)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["graphs"]["torchscript"]["dynamic"] and card["graphs"]["onnx"]["dynamic"]
    assert card["provenance"]["sites"] == [{"site": "s1", "samples": 4}]
    assert card["weights_sha256"] in (folder / "MODEL_CARD.md").read_text()


def test_torchscript_and_onnx_runtime_predict_as_the_pytorch_model(exported):
    kind, model, folder, scans = exported
    reference = predictions(model.recipe, model.network, scans)
    assert_same(predictions(model.recipe, load_torchscript(folder), scans), reference)
    assert_same(predictions(model.recipe, onnx_network(folder / "models" / "model.onnx"), scans), reference)


def test_the_monai_bundle_runs_with_monais_bundle_tools_and_predicts_as_siteflow_infer(exported, tmp_path):
    from monai.bundle import run

    kind, model, folder, scans = exported
    run(config_file=str(folder / "configs" / "inference.json"), meta_file=str(folder / "configs" / "metadata.json"),
        bundle_root=str(folder), input_dir=str(scans), output_dir=str(tmp_path / "bundle"))
    items = list_inputs([scans], model.recipe.spatial_dims)
    run_inference(Predictor(model.recipe, model.network), items, tmp_path / "infer", progress=False)
    bundle_files = sorted(p.relative_to(tmp_path / "bundle") for p in (tmp_path / "bundle").rglob("*") if p.is_file())
    assert bundle_files == sorted(p.relative_to(tmp_path / "infer") for p in (tmp_path / "infer").rglob("*") if p.is_file())
    for path in bundle_files:
        if path.suffix == ".png":
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "bundle" / path)), np.asarray(Image.open(tmp_path / "infer" / path)))
        elif path.name.endswith(".nii.gz"):
            mine, theirs = (sitk.ReadImage(str(tmp_path / side / path)) for side in ("bundle", "infer"))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs))
            assert mine.GetDirection() == theirs.GetDirection() and mine.GetOrigin() == theirs.GetOrigin()
    with open(tmp_path / "bundle" / "predictions.csv") as a, open(tmp_path / "infer" / "predictions.csv") as b:
        rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            if key.startswith("p_"):
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), abs=TOLERANCE)
            else:
                assert row_a[key] == row_b[key]


def test_altered_weights_or_graphs_are_refused(exported, tmp_path):
    import shutil

    kind, model, folder, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = copy / "models" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelSourceError, match="do not match the SHA-256 digest of model_card.json"):
        from_export(copy)
    graph = copy / "models" / "model.ts"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ModelSourceError, match="model.ts does not match the SHA-256 digest"):
        load_torchscript(copy)
    with pytest.raises(OutputError, match="exists already"):
        export_model(model, folder)
