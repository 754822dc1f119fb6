"""Running a trained model on one read input and mapping its prediction back onto the input's
own grid, exactly as evaluation does (:class:`~siteflow.tasks.segmentation.inference.Inference`
for one pass or sliding windows, logits resized to the native size before the argmax;
volumes brought back to their source grid by
:func:`~siteflow.datasets.volumes.preprocessing.to_source_grid`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from siteflow.core.extras import optional_module
from siteflow.datasets.volumes.preprocessing import onto_source_grid, to_source_grid
from siteflow.inference.inputs import ReadInput
from siteflow.inference.recipe import ModelRecipe
from siteflow.kernels import predict_labels
from siteflow.tasks.segmentation.inference import Inference, resize_spatial

sitk = optional_module("SimpleITK", "volumes", "predicting on volumes")

Network = Callable[[Tensor], Tensor]
"""images (N, C_in, *spatial) float32 -> logits (N, C, *spatial), or (N, L) for classifiers."""
Inferer = Callable[[Tensor, Network], Tensor]
"""MONAI's inferer signature: (images, network) -> logits over the whole image."""


@dataclass
class Prediction:
    """A model's prediction on one input, on the input's own grid.

    Attributes:
        label_map: segmentation: 2D class ids uint8 (H, W); volumes a uint8 SimpleITK image
            with the input's size, spacing, origin and direction.
        probabilities: segmentation, when asked: float32 (C, H, W), or a SimpleITK vector image
            of C components on the input's grid.
        scores: multi-label: sigmoid probabilities float (L,) of every label.
    """

    label_map: np.ndarray | sitk.Image | None = None
    probabilities: np.ndarray | sitk.Image | None = None
    scores: np.ndarray | None = None

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels (voxels) of each class in the label map, int64 (C,)."""
        values = sitk.GetArrayViewFromImage(self.label_map) if isinstance(self.label_map, sitk.Image) else self.label_map
        return np.bincount(np.asarray(values).ravel(), minlength=num_classes)[:num_classes]


class Predictor:
    """``predictor(read) -> Prediction`` for a model described by ``recipe``.

    Args:
        recipe: the model's description.
        network: the network to run (the PyTorch model; or an exported graph with the same
            signature: TorchScript, an ONNX Runtime session wrapped as a function).
        probabilities: also return segmentation probabilities (softmax over classes).
        inferer: a MONAI inferer ``(images, network) -> logits`` that replaces the recipe's
            :class:`~siteflow.tasks.segmentation.inference.Inference` (a MONAI bundle's).
    """

    def __init__(self, recipe: ModelRecipe, network: Network, *, probabilities: bool = False, inferer: Inferer | None = None) -> None:
        self.recipe = recipe
        self.network = network
        self.probabilities = probabilities
        inference = Inference(recipe.inference)
        self.inferer: Inferer = inferer or (lambda images, network: inference(network, images))

    def __call__(self, read: ReadInput) -> Prediction:
        """The prediction on ``read``: :meth:`compute` then :meth:`finish`."""
        return self.finish(read, self.compute(read))

    @torch.inference_mode()
    def compute(self, read: ReadInput) -> Tensor:
        """The network's outputs on ``read``: logits (1, C, *spatial) on the model's grid (one
        pass or sliding windows), or (1, L) label logits."""
        images = read.image.unsqueeze(0)
        if self.recipe.task == "multilabel":
            return self.network(images)
        return self.inferer(images, self.network)

    @torch.inference_mode()
    def finish(self, read: ReadInput, outputs: Tensor) -> Prediction:
        """:meth:`compute`'s ``outputs`` as a prediction on the input's own grid: logits resized
        to the native size before the argmax (2D), label map and probabilities resampled onto the
        source grid (volumes); label probabilities (classifiers)."""
        if self.recipe.task == "multilabel":
            return Prediction(scores=torch.sigmoid(outputs)[0].double().numpy())
        num_classes = len(self.recipe.class_names)
        if self.recipe.spatial_dims == 2:
            logits = resize_spatial(outputs, read.native)
            labels = predict_labels(logits, num_classes)[0].numpy().astype(np.uint8)
            probabilities = torch.softmax(logits, 1)[0].numpy() if self.probabilities else None
            return Prediction(labels, probabilities)
        labels = predict_labels(outputs, num_classes)[0].numpy()
        label_map = to_source_grid(labels, read.grid, read.source)
        probabilities = None
        if self.probabilities:
            values = torch.softmax(outputs, 1)[0].movedim(0, -1).numpy()  # (D, H, W, C)
            moved = sitk.GetImageFromArray(np.ascontiguousarray(values, dtype=np.float32), isVector=True)
            moved.CopyInformation(read.grid)
            probabilities = onto_source_grid(moved, read.source, sitk.sitkLinear)
        return Prediction(label_map, probabilities)
