"""The classification task's files: confusion matrices (CSV and PNG) and the picture of a
partition's per-site class counts."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from siteflow.core.atomic import write_text
from siteflow.core.pictures import drawing, new_figure, save_png


def write_confusion(path: Path, confusion: torch.Tensor, class_names: Sequence[str], title: str) -> None:
    """``confusion`` int (K, K) (row = true class, column = predicted) as ``<path>.csv`` and an
    annotated heatmap ``<path>.png`` (with matplotlib), each row normalised to the true class's
    count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, confusion.tolist()):
        writer.writerow([name, *row])
    write_text(path.with_suffix(".csv"), buffer.getvalue())
    if not drawing():
        return
    counts = confusion.double().numpy()
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = 1.6 + 0.55 * len(class_names)
    figure = new_figure(figsize=(side + 0.8, side), dpi=110)
    axes = figure.subplots()
    image = axes.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
    axes.set_xticks(range(len(class_names)), labels=class_names, rotation=40, ha="right", fontsize=8)
    axes.set_yticks(range(len(class_names)), labels=class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for (i, j), count in np.ndenumerate(counts):
        axes.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.6 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    save_png(figure, path.with_suffix(".png"))


def plot_class_counts(path: Path, counts: Mapping[str, Sequence[int]], class_names: Sequence[str], title: str) -> None:
    """Stacked bars of each site's class counts (``counts[site]``: K numbers) as a PNG.
    Nothing without matplotlib."""
    if not drawing():
        return
    sites = list(counts)
    figure = new_figure(figsize=(2.0 + 0.55 * len(sites), 3.6), dpi=110)
    axes = figure.subplots()
    bottom = np.zeros(len(sites))
    for k, name in enumerate(class_names):
        values = np.array([counts[site][k] for site in sites], dtype=float)
        axes.bar(range(len(sites)), values, bottom=bottom, label=name)
        bottom += values
    axes.set_xticks(range(len(sites)), labels=sites, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("training images")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    save_png(figure, path)
