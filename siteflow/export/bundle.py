"""The MONAI bundle of an exported model: ``configs/metadata.json`` and
``configs/inference.json`` beside ``models/``, run by MONAI's bundle tools::

    python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
        --bundle_root . --input_dir scans --output_dir masks

The bundle's network is the TorchScript graph (``models/model.ts``, checked against the model
card's digest before it is loaded) and its inferer MONAI's ``SlidingWindowInferer`` or
``SimpleInferer`` with the training's window, overlap and blending; the inputs are read and the
outputs written by siteflow (:func:`run_bundle`), so that the preprocessing is exactly the
training's.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from siteflow.export.card import file_sha256
from siteflow.inference import Predictor, check_output_folder, from_export, list_inputs, run_inference
from siteflow.inference.recipe import ModelRecipe
from siteflow.inference.run import InferenceReport
from siteflow.inference.sources import CARD_JSON, ModelSourceError

TORCHSCRIPT = "models/model.ts"
ONNX = "models/model.onnx"


def inference_config(recipe: ModelRecipe) -> dict[str, Any]:
    """``configs/inference.json`` of a model described by ``recipe``."""
    settings = recipe.inference
    if recipe.task == "segmentation" and settings.roi_size is not None and settings.mode != "whole":
        inferer = {"_target_": "SlidingWindowInferer", "roi_size": list(settings.roi_size), "sw_batch_size": settings.sw_batch_size,
                   "overlap": settings.overlap, "mode": settings.blend}
    else:
        inferer = {"_target_": "SimpleInferer"}
    return {
        "imports": ["$import torch", "$from siteflow.export.bundle import load_torchscript", "$from siteflow.export.bundle import run_bundle"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/inputs'",
        "output_dir": "$@bundle_root + '/outputs'",
        "probabilities": False,
        "device": "$torch.device('cpu')",
        "network_def": "$load_torchscript(@bundle_root, @device)",
        "network": "@network_def",
        "inferer": inferer,
        "run": "$run_bundle(@bundle_root, @network, @inferer, @input_dir, @output_dir, @probabilities)",
    }


def metadata(recipe: ModelRecipe, card: dict[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json``: versions, task and the network's input and output."""
    source = recipe.input
    spatial = list(recipe.inference.roi_size or getattr(source, "img_size", None) or [-1] * recipe.spatial_dims)
    outputs = len(recipe.class_names)
    return {
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported by siteflow {card['siteflow_version']} from {recipe.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"siteflow": card["siteflow_version"]},
        "name": recipe.name,
        "task": f"{recipe.task} ({recipe.spatial_dims}D)",
        "description": "Exported by siteflow; see MODEL_CARD.md beside configs/ for the training, the data and the test metrics.",
        "authors": "the consortium that trained it with siteflow",
        "copyright": "see MODEL_CARD.md",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "see MODEL_CARD.md", "num_channels": source.channels,
                "spatial_shape": spatial, "dtype": "float32", "value_range": [], "is_patch_data": recipe.task == "segmentation",
                "channel_def": {str(i): f"channel {i}" for i in range(source.channels)},
            }},
            "outputs": {"pred": {
                "type": "image" if recipe.task == "segmentation" else "probabilities", "format": "logits", "num_channels": outputs,
                "spatial_shape": spatial if recipe.task == "segmentation" else [], "dtype": "float32", "value_range": [],
                "is_patch_data": recipe.task == "segmentation", "channel_def": {str(i): name for i, name in enumerate(recipe.class_names)},
            }},
        },
    }


def load_torchscript(bundle_root: str | Path, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """The bundle's TorchScript graph, once its file matches the model card's SHA-256 digest.

    Raises ModelSourceError naming the file when it does not."""
    root = Path(bundle_root)
    path = root / TORCHSCRIPT
    try:
        expected = json.loads((root / CARD_JSON).read_text())["files"][TORCHSCRIPT]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ModelSourceError(f"{root / CARD_JSON}: no digest of {TORCHSCRIPT} to check it against ({type(error).__name__}: {error})") from None
    if not path.is_file() or not hmac.compare_digest(file_sha256(path), str(expected)):
        raise ModelSourceError(f"{path} does not match the SHA-256 digest of {CARD_JSON} (missing, corrupted or altered)")
    return torch.jit.load(str(path), map_location=device).eval()


def run_bundle(bundle_root: str | Path, network: Any, inferer: Any, input_dir: str | Path, output_dir: str | Path,
               probabilities: bool = False) -> InferenceReport:
    """Predict every input in ``input_dir`` into ``output_dir`` with the bundle's ``network``
    (TorchScript) and MONAI ``inferer``, reading and writing as ``siteflow-infer`` does."""
    recipe = from_export(Path(bundle_root)).recipe
    items = list_inputs([Path(input_dir)], recipe.spatial_dims)
    check_output_folder(Path(output_dir), [Path(input_dir)], items, recipe)
    predictor = Predictor(recipe, network, probabilities=probabilities, inferer=lambda images, net: inferer(images, net))
    return run_inference(predictor, items, Path(output_dir), progress=False)

