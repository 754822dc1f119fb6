"""The picture of masked image modelling: original, masked and reconstructed images, side by side."""

from __future__ import annotations

from pathlib import Path

import torch

from siteflow.core.pictures import drawing, new_figure, save_png

COLUMNS = ("original", "masked", "reconstructed")


def displayable(images: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Images (K, C, *spatial) -> (K, H, W, 3) in [0, 1] for display, each image scaled by its
    original's range (``low``, ``high``: (K,)): the middle slice of a volume, the first channel
    as grey unless there are 3."""
    if images.dim() == 5:
        images = images[:, :, images.shape[2] // 2]
    if images.shape[1] != 3:
        images = images[:, :1].expand(-1, 3, -1, -1)
    scale = (high - low).clamp_min(1e-8).view(-1, 1, 1, 1)
    return ((images - low.view(-1, 1, 1, 1)) / scale).clamp(0, 1).permute(0, 2, 3, 1)


def save_reconstructions(path: Path, original: torch.Tensor, masked: torch.Tensor, reconstructed: torch.Tensor) -> None:
    """Write a PNG (atomically) with one row per image: original, masked (hidden patches
    blank) and reconstructed, each (K, C, *spatial) float. Nothing without matplotlib."""
    if not drawing():
        return
    low = original.flatten(1).min(dim=1).values
    high = original.flatten(1).max(dim=1).values
    columns = [displayable(images.detach().float().cpu(), low.cpu(), high.cpu()) for images in (original, masked, reconstructed)]
    rows = len(original)
    figure = new_figure(figsize=(6, 2 * rows))
    for row in range(rows):
        for column, (title, images) in enumerate(zip(COLUMNS, columns)):
            axes = figure.add_subplot(rows, len(COLUMNS), row * len(COLUMNS) + column + 1)
            axes.imshow(images[row].numpy(), interpolation="nearest")
            axes.set_axis_off()
            if row == 0:
                axes.set_title(title)
    figure.tight_layout()
    save_png(figure, path)
