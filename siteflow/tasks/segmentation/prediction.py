"""Sample-wise outputs of a segmentation model: per-image scores (Dice, HD95, average surface
distance, IoU, sensitivity, specificity; distances in the units of the voxel spacing, mm for
volumes), overlays and NIfTI files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from siteflow.core.atomic import atomic_path, safe_name
from siteflow.core.extras import optional_module
from siteflow.core.pictures import colors, drawing, new_figure, patches, save_png
from siteflow.metrics import confusion_counts, hd95, overlap_scores
from siteflow.metrics.hausdorff import average_surface_distance

sitk = optional_module("SimpleITK", "volumes", "saving predictions as NIfTI (--save-nifti)")

SAMPLE_METRICS = ("dice", "hd95", "asd", "iou", "sensitivity", "specificity")
"""The per-sample metrics of ``predict_test.py``, in the order of its columns."""
OVERLAY_SAMPLES = 6
OVERLAY_COLOURS = ("#00e5ff", "#ff2bd6", "#ffe600", "#39ff14", "#ff7f0e", "#1f77ff", "#ffffff")


def score_samples(
    batches: list[dict], class_names: Sequence[str], ignore_index: int | None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Image ids, and for each metric of :data:`SAMPLE_METRICS` its float64 table (N, C-1)
    over the foreground classes of every predicted sample.

    Batches: ``{"pred": (B, *spatial) int64, "label": (B, *spatial) int64, "id": list[str]}``,
    and for volumes ``"spacing"``: float (B, n_axes), each sample's voxel spacing in mm, which
    HD95 and the average surface distance (ASD) are measured in (pixels without it).
    Dice, IoU, sensitivity and specificity count no pixel labelled ``ignore_index`` (see
    :func:`~siteflow.metrics.overlap_scores`); HD95 and ASD, which have no notion of ignored
    pixels, take them as background in prediction and truth.
    """
    num_classes = len(class_names)
    ids: list[str] = []
    tables: dict[str, list[torch.Tensor]] = {name: [] for name in SAMPLE_METRICS}
    for batch in batches:
        label, pred = batch["label"], batch["pred"]
        scores = overlap_scores(confusion_counts(pred, label, num_classes, ignore_index=ignore_index))
        for name, score in scores.items():
            tables[name].append(score[:, 1:])
        if ignore_index is not None:
            ignored = label == ignore_index
            label, pred = label.masked_fill(ignored, 0), pred.masked_fill(ignored, 0)
        spacing = batch.get("spacing")
        tables["hd95"].append(hd95(pred, label, num_classes, spacing=spacing))
        tables["asd"].append(average_surface_distance(pred, label, num_classes, spacing=spacing))
        ids.extend(batch["id"])
    return ids, {name: torch.cat(rows).double().numpy() for name, rows in tables.items()}


def plot_overlays(batches: list[dict], class_names: Sequence[str], path: Path, ids: Sequence[str] | None = None) -> None:
    """A grid of (image, truth, prediction) rows for the first few images (or those named in
    ``ids``), as a PNG, with a legend of the classes' colours.

    Batches: ``{"image": (B, C, *spatial) float, "label", "pred": (B, *spatial) int64, "id":
    list[str]}``, the image of the label's size; images of different batches may differ in size.
    Nothing without matplotlib (:func:`~siteflow.core.pictures.drawing`).
    """
    if not drawing():
        return
    items = [item for b in batches for item in zip(b["image"], b["label"], b["pred"], b["id"]) if ids is None or item[3] in ids]
    items = items[:OVERLAY_SAMPLES]
    legend_in = 0.45
    figure = new_figure(figsize=(6.6, 2.2 * len(items) + legend_in), dpi=100)
    axes = figure.subplots(len(items), 3, squeeze=False)
    for row, (image, label, pred, image_id) in enumerate(items):
        if image.ndim != 3:  # a volume: show the middle slice
            middle = image.shape[1] // 2
            image, label, pred = image[:, middle], label[middle], pred[middle]
        picture = image.float().permute(1, 2, 0).numpy()
        picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-8)
        picture = picture[..., 0] if picture.shape[-1] == 1 else picture[..., :3]
        for column, (mask, title) in enumerate([(None, image_id), (label, "truth"), (pred, "prediction")]):
            axis = axes[row, column]
            axis.imshow(picture, cmap="gray")
            if mask is not None:
                overlay = np.zeros((*mask.shape, 4))
                for class_id in range(1, len(class_names)):
                    colour = colors.to_rgb(OVERLAY_COLOURS[(class_id - 1) % len(OVERLAY_COLOURS)])
                    overlay[mask.numpy() == class_id] = (*colour, 0.5)
                axis.imshow(overlay)
            axis.set_title(title, fontsize=11)
            axis.axis("off")
    legend = [patches.Patch(facecolor=OVERLAY_COLOURS[(c - 1) % len(OVERLAY_COLOURS)], label=class_names[c]) for c in range(1, len(class_names))]
    figure.legend(handles=legend, loc="upper center", ncol=len(legend), fontsize=11, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - legend_in / figure.get_figheight()))
    save_png(figure, path)


def save_nifti(batches: list[dict], folder: Path, on_source_grid: Callable[[str, np.ndarray], sitk.Image] | None = None) -> None:
    """Write every input, prediction and truth as ``<id>_{image,pred,label}.nii.gz``; or, with
    ``on_source_grid`` (volumes: ``(id, prediction int (D, H, W)) -> the prediction on the grid
    of the case's source file``), each prediction alone as ``<id>_pred.nii.gz``, with the
    source's exact size, spacing, origin and direction (the image and label are the source files)."""
    for batch in batches:
        for image, label, pred, image_id in zip(batch["image"], batch["label"], batch["pred"], batch["id"]):
            if on_source_grid is not None:
                with atomic_path(folder / f"{safe_name(image_id)}_pred.nii.gz") as tmp:
                    sitk.WriteImage(on_source_grid(image_id, pred.numpy()), str(tmp), useCompression=True)
                continue
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
