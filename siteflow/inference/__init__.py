"""Using a trained model on new, unlabelled inputs (``siteflow-infer``): the model from a run
folder, a hand-over file or an exported folder (:mod:`~siteflow.inference.sources`), the
training's preprocessing and inference (:mod:`~siteflow.inference.inputs`,
:mod:`~siteflow.inference.predictor`), outputs on each input's own grid
(:mod:`~siteflow.inference.writers`, :mod:`~siteflow.inference.run`)."""

from siteflow.inference.inputs import InputError, InputItem, list_inputs, read_input
from siteflow.inference.predictor import Prediction, Predictor
from siteflow.inference.recipe import ModelRecipe
from siteflow.inference.run import InferenceReport, check_output_folder, run_inference
from siteflow.inference.sources import LoadedModel, ModelSourceError, from_export, from_handover, from_run_folder

__all__ = [
    "InferenceReport",
    "InputError",
    "InputItem",
    "LoadedModel",
    "ModelRecipe",
    "ModelSourceError",
    "Prediction",
    "Predictor",
    "check_output_folder",
    "from_export",
    "from_handover",
    "from_run_folder",
    "list_inputs",
    "read_input",
    "run_inference",
]
