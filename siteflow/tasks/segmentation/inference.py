"""Running a segmentation model over whole images for evaluation: in one pass or in sliding
windows, and back at the label's (native) resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from siteflow.config import InferenceConfig

INTERPOLATION = {2: "bilinear", 3: "trilinear"}
"""The mode of :func:`torch.nn.functional.interpolate` that resizes logits and images, by spatial dims."""


class Inference:
    """Logits of a model for whole images, as ``train.inference`` says
    (:class:`~siteflow.config.InferenceConfig`): one pass of the model over the image, or
    MONAI's :func:`~monai.inferers.sliding_window_inference` over windows of ``roi_size``
    (padded where the image is smaller than a window), blended with Gaussian or constant
    weights.

    ``inference(model, images)``: images (N, C_in, *spatial) -> logits (N, C, *spatial).

    Raises ValueError for a sliding window without a ``roi_size``.
    """

    def __init__(self, config: InferenceConfig) -> None:
        if config.mode == "sliding_window" and config.roi_size is None:
            raise ValueError("train.inference.mode sliding_window needs a roi_size (the training patch size)")
        self.config = config
        self.sliding = config.roi_size is not None and config.mode != "whole"

    def __call__(self, model: nn.Module, images: Tensor) -> Tensor:
        if not self.sliding:
            return model(images)
        config = self.config
        return sliding_window_inference(
            images, config.roi_size, config.sw_batch_size, model, overlap=config.overlap, mode=config.blend
        )


def resize_spatial(values: Tensor, size: torch.Size | tuple[int, ...]) -> Tensor:
    """Floating ``values`` (N, C, *spatial), logits or images, resized to ``size`` (one entry
    per spatial axis) bilinearly (trilinearly in 3D) with ``align_corners=False``; unchanged
    when already of that size. Resizing logits before the argmax brings the prediction of a
    model that ran on resized images back to each image's native resolution."""
    size = tuple(size)
    if tuple(values.shape[2:]) == size:
        return values
    return F.interpolate(values, size=size, mode=INTERPOLATION[len(size)], align_corners=False)
