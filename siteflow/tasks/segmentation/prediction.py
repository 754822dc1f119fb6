"""Sample-wise outputs of a segmentation model: per-image scores, overlays and NIfTI files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from siteflow.core.atomic import atomic_path, safe_name
from siteflow.metrics import SampleDice, hd95

OVERLAY_SAMPLES = 6
OVERLAY_COLOURS = ("#00e5ff", "#ff2bd6", "#ffe600", "#39ff14", "#ff7f0e", "#1f77ff", "#ffffff")


def score_samples(
    batches: list[dict], class_names: Sequence[str], ignore_index: int | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image ids, Dice (N, C-1) and HD95 (N, C-1) of every predicted sample."""
    num_classes = len(class_names)
    dice = SampleDice(num_classes, ignore_index=ignore_index, average="none")
    ids, distances = [], []
    for batch in batches:
        dice.update(batch["pred"], batch["label"])
        label, pred = batch["label"], batch["pred"]
        if ignore_index is not None:  # HD95 has no notion of ignored pixels: treat them as background
            ignored = label == ignore_index
            label, pred = label.masked_fill(ignored, 0), pred.masked_fill(ignored, 0)
        distances.append(hd95(pred, label, num_classes))
        ids.extend(batch["id"])
    return ids, dice.per_sample().double().numpy(), torch.cat(distances).double().numpy()


def plot_overlays(batches: list[dict], class_names: Sequence[str], path: Path) -> None:
    """A grid of (image, truth, prediction) rows for the first few images, as a PNG."""
    images = torch.cat([b["image"] for b in batches])[:OVERLAY_SAMPLES]
    labels = torch.cat([b["label"] for b in batches])[:OVERLAY_SAMPLES]
    preds = torch.cat([b["pred"] for b in batches])[:OVERLAY_SAMPLES]
    ids = [i for b in batches for i in b["id"]][:OVERLAY_SAMPLES]
    if images.ndim != 4:  # volumes: show the middle slice
        middle = images.shape[2] // 2
        images, labels, preds = images[:, :, middle], labels[:, middle], preds[:, middle]
    figure = Figure(figsize=(6.6, 2.2 * len(ids)), dpi=100)
    axes = figure.subplots(len(ids), 3, squeeze=False)
    for row, (image, label, pred, image_id) in enumerate(zip(images, labels, preds, ids)):
        picture = image.float().permute(1, 2, 0).numpy()
        picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-8)
        picture = picture[..., 0] if picture.shape[-1] == 1 else picture[..., :3]
        for column, (mask, title) in enumerate([(None, image_id), (label, "truth"), (pred, "prediction")]):
            axis = axes[row, column]
            axis.imshow(picture, cmap="gray")
            if mask is not None:
                overlay = np.zeros((*mask.shape, 4))
                for class_id in range(1, len(class_names)):
                    colour = to_rgb(OVERLAY_COLOURS[(class_id - 1) % len(OVERLAY_COLOURS)])
                    overlay[mask.numpy() == class_id] = (*colour, 0.5)
                axis.imshow(overlay)
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def save_nifti(batches: list[dict], folder: Path) -> None:
    """Write every input, prediction and truth as ``<id>_{image,pred,label}.nii.gz``."""
    for batch in batches:
        for image, label, pred, image_id in zip(batch["image"], batch["label"], batch["pred"], batch["id"]):
            channels_last = image.float().movedim(0, -1).numpy()
            vector = channels_last.shape[-1] > 1
            volumes = {
                "image": sitk.GetImageFromArray(channels_last if vector else channels_last[..., 0], isVector=vector),
                "label": sitk.GetImageFromArray(label.numpy().astype(np.uint8)),
                "pred": sitk.GetImageFromArray(pred.numpy().astype(np.uint8)),
            }
            for kind, volume in volumes.items():
                with atomic_path(folder / f"{safe_name(image_id)}_{kind}.nii.gz") as tmp:
                    sitk.WriteImage(volume, str(tmp), useCompression=True)
