"""``siteflow-export``: a trained model as a self-contained folder, which is also a MONAI bundle::

    MODEL_CARD.md, model_card.json     what the model is, how it was trained, every file's digest
    models/model.safetensors           the weights (siteflow-infer --model reads them)
    models/model.ts                    TorchScript graph
    models/model.onnx                  ONNX graph (ONNX Runtime)
    configs/metadata.json, configs/inference.json   the MONAI bundle (see siteflow.export.bundle)

The folder is written beside its destination and renamed into place once complete: a crash
leaves no half-written export.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from siteflow import __version__
from siteflow.core.atomic import OutputError, save_weights, write_json, write_text
from siteflow.core.io import weights_sha256
from siteflow.export.bundle import ONNX, TORCHSCRIPT, inference_config, metadata
from siteflow.export.card import card_json, card_markdown, file_sha256
from siteflow.export.graphs import export_onnx, export_torchscript
from siteflow.inference.recipe import ModelRecipe
from siteflow.inference.sources import CARD_JSON, WEIGHTS_FILE, LoadedModel

EXAMPLE_SIZE = {2: (64, 64), 3: (32, 32, 32)}
"""The spatial size of the example input that the graphs are traced on, where neither the
model's input size nor its sliding window gives one."""


def example_shape(recipe: ModelRecipe) -> tuple[int, ...]:
    """(N, C, *spatial) of the example input the graphs are traced on: a batch of 2 at the
    model's input size (2D ``img_size``), else its sliding window, else :data:`EXAMPLE_SIZE`."""
    spatial = getattr(recipe.input, "img_size", None) or recipe.inference.roi_size or EXAMPLE_SIZE[recipe.spatial_dims]
    return (2, recipe.input.channels, *spatial)


def export_model(model: LoadedModel, folder: Path, *, onnx: bool = True) -> Path:
    """Write ``model`` into the new folder ``folder`` (see the module); returns it.

    Raises OutputError naming ``folder`` when it exists already or cannot be written."""
    folder = Path(folder)
    if folder.exists():
        raise OutputError(17, f"{folder} exists already: choose a new folder for the export")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    except OSError as error:
        raise OutputError(error.errno, f"cannot write {folder}: {error.strerror}") from error
    try:
        _write(model, staging, onnx=onnx)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write(model: LoadedModel, folder: Path, *, onnx: bool) -> None:
    network, recipe = model.network.eval(), model.recipe
    weights = {name: tensor.detach().contiguous() for name, tensor in network.state_dict().items()}
    save_weights(folder / WEIGHTS_FILE, weights)
    shape = example_shape(recipe)
    graphs = {"torchscript": export_torchscript(network, shape, folder / TORCHSCRIPT)}
    if onnx:
        graphs["onnx"] = export_onnx(network, shape, folder / ONNX)
    files = {name: file_sha256(folder / name) for name in [WEIGHTS_FILE, *(f"models/{g.file}" for g in graphs.values())]}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card = card_json(model, version=__version__, created=created, weights_sha256=weights_sha256(weights), files=files,
                     graphs={kind: {"file": f"models/{g.file}", "dynamic": g.dynamic, "example_shape": list(g.example_shape)}
                             for kind, g in graphs.items()})
    write_json(folder / CARD_JSON, card)
    write_text(folder / "MODEL_CARD.md", card_markdown(card))
    write_json(folder / "configs" / "inference.json", inference_config(recipe))
    write_json(folder / "configs" / "metadata.json", metadata(recipe, card))

