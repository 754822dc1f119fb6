"""Writing one input's outputs, each file atomically (:mod:`siteflow.core.atomic`): label maps
(PNG for 2D, NIfTI with the input's geometry for volumes, DICOM SEG for DICOM series) and
probability maps (NIfTI, one component per class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from siteflow.core.atomic import atomic_path
from siteflow.core.extras import optional_module
from siteflow.inference.dicom_seg import write_dicom_seg
from siteflow.inference.inputs import ReadInput
from siteflow.inference.predictor import Prediction
from siteflow.inference.recipe import ModelRecipe

sitk = optional_module("SimpleITK", "volumes", "writing NIfTI outputs")

LABEL_SUFFIX = {2: ".png", 3: ".nii.gz"}
PROBABILITIES = "_probabilities.nii.gz"
DICOM_SEG = ".seg.dcm"


def output_files(recipe: ModelRecipe, read_kind: str, name: Path, *, probabilities: bool) -> list[Path]:
    """The files (relative to the output folder) written for an input named ``name`` of kind
    ``read_kind`` (see :class:`~siteflow.inference.inputs.InputItem`); none for a classifier
    (its outputs are rows of ``predictions.csv``)."""
    if recipe.task != "segmentation":
        return []
    files = [name.parent / f"{name.name}{LABEL_SUFFIX[recipe.spatial_dims]}"]
    if read_kind == "dicom_series":
        files.append(name.parent / f"{name.name}{DICOM_SEG}")
    if probabilities:
        files.append(name.parent / f"{name.name}{PROBABILITIES}")
    return files


def write_outputs(folder: Path, recipe: ModelRecipe, read: ReadInput, prediction: Prediction) -> list[Path]:
    """Write the outputs of one input into ``folder`` (see :func:`output_files`); returns them."""
    files = [folder / path for path in output_files(recipe, read.item.kind, read.item.name, probabilities=prediction.probabilities is not None)]
    for path in files:
        name = path.name
        if name.endswith(PROBABILITIES):
            write_probabilities(path, prediction.probabilities)
        elif name.endswith(DICOM_SEG):
            write_dicom_seg(path, prediction.label_map, read.dicom_files, recipe)
        elif name.endswith(".png"):
            write_png(path, prediction.label_map)
        else:
            write_volume(path, prediction.label_map)
    return files


def write_png(path: Path, labels: np.ndarray) -> None:
    """Class ids uint8 (H, W) as an 8-bit grey PNG (pixel value = class id)."""
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(tmp, format="PNG")


def write_volume(path: Path, image: sitk.Image) -> None:
    """A SimpleITK image as compressed NIfTI (its geometry kept)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def write_probabilities(path: Path, probabilities: np.ndarray | sitk.Image) -> None:
    """Probabilities float32 (C, H, W) of a 2D image, or a vector image of a volume, as NIfTI
    with one component per class."""
    if isinstance(probabilities, np.ndarray):
        probabilities = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probabilities, 0, -1), dtype=np.float32), isVector=True)
    write_volume(path, probabilities)
