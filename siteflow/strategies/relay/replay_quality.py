"""How well generators replay an earlier site: the numbers, and a picture.

For one earlier site, replayed (image, label map) pairs are compared with real pairs of that
site (when its data is here; a deployed site has only the replays):

- the previous solver's Dice on the replayed pairs (does the image generator render its label
  map?) beside its Dice on the real pairs;
- diversity: the mean pairwise distance between replayed images beside that between real
  images (a generator that collapses to one mode scores near 0);
- label-map statistics: foreground fraction, and connected foreground components per map
  (a vessel tree is a few components, scattered pixels are hundreds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from siteflow.core.pictures import drawing, new_figure, save_png
from siteflow.metrics import PooledDice

Pairs = tuple[torch.Tensor, torch.Tensor]
"""(images (N, C, H, W) float in [-1, 1], labels (N, H, W) int64)."""

EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ReplayQuality:
    """The replay quality of one earlier site; a ``*_real`` value is None when no real data
    of the site is here."""

    site: str
    samples: int
    solver_dice_replay: float
    solver_dice_real: float | None
    diversity_replay: float
    diversity_real: float | None
    foreground_replay: float
    foreground_real: float | None
    components_replay: float
    components_real: float | None

    def summary(self) -> str:
        """One line for the log."""

        def pair(replay: float, real: float | None, digits: int) -> str:
            return f"{replay:.{digits}f}" + ("" if real is None else f" (real {real:.{digits}f})")

        return (
            f"{self.site}: solver Dice on replays {pair(self.solver_dice_replay, self.solver_dice_real, 3)}, "
            f"diversity {pair(self.diversity_replay, self.diversity_real, 3)}, "
            f"foreground {pair(self.foreground_replay, self.foreground_real, 3)}, "
            f"components per map {pair(self.components_replay, self.components_real, 1)} ({self.samples} samples)"
        )


@torch.no_grad()
def solver_dice(solver: nn.Module, pairs: Pairs, num_classes: int, *, ignore_index: int | None = None, batch_size: int = 16) -> float:
    """Dice of ``solver`` (images (N, C, H, W) -> logits (N, K, H, W)) on ``pairs``, pooled
    over all their pixels and averaged over the foreground classes, as the site matrix's
    ``dice`` (so a class absent from both the label maps and the predictions scores 1: empty
    replayed maps that the solver leaves empty score 1, which their foreground fraction
    shows). The solver is evaluated in evaluation mode, then left in its former mode."""
    images, labels = pairs
    metric = PooledDice(num_classes, ignore_index=ignore_index)
    training = solver.training
    solver.eval()
    try:
        for start in range(0, len(images), batch_size):
            metric.update(solver(images[start : start + batch_size]), labels[start : start + batch_size])
    finally:
        solver.train(training)
    return float(metric.compute())


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean over all pairs i < j of the root-mean-square difference between images i and j:
    (N, C, H, W) with N >= 2 -> a float, 0 for identical images."""
    if len(images) < 2:
        raise ValueError(f"diversity needs at least 2 images, got {len(images)}")
    flat = images.reshape(len(images), -1).double()
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    upper = torch.triu_indices(len(images), len(images), offset=1)
    return float(distances[upper[0], upper[1]].mean())


def foreground_fraction(labels: torch.Tensor, ignore_index: int | None = None) -> float:
    """Share of pixels of labels (N, H, W) that are not background (class 0); ignored pixels
    count as background, as the generators learn them."""
    return float(_foreground(labels, ignore_index).double().mean())


def mean_components(labels: torch.Tensor, ignore_index: int | None = None) -> float:
    """Mean number of 8-connected foreground components per label map of labels (N, H, W)."""
    counts = [ndimage.label(mask, structure=EIGHT_NEIGHBOURS)[1] for mask in _foreground(labels, ignore_index).cpu().numpy()]
    return float(np.mean(counts))


def _foreground(labels: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """bool, labels' shape: neither background nor ignored."""
    foreground = labels != 0
    return foreground if ignore_index is None else foreground & (labels != ignore_index)


def measure_replay(
    site: str,
    solver: nn.Module,
    replay: Pairs,
    real: Pairs | None,
    *,
    num_classes: int,
    ignore_index: int | None = None,
) -> ReplayQuality:
    """The replay quality of ``site`` from its replayed pairs and, when here, real pairs of the
    same side (see the module's docstring); ``solver`` scores both."""

    def measured(pairs: Pairs) -> tuple[float, float, float, float]:
        images, labels = pairs
        return (
            solver_dice(solver, pairs, num_classes, ignore_index=ignore_index),
            mean_pairwise_distance(images),
            foreground_fraction(labels, ignore_index),
            mean_components(labels, ignore_index),
        )

    replayed = measured(replay)
    reference = measured(real) if real is not None else (None,) * 4
    values = [value for pair in zip(replayed, reference) for value in pair]
    return ReplayQuality(site, len(replay[0]), *values)


def save_replay_grid(path: Path, sites: Sequence[tuple[str, Pairs, Pairs | None]], num_classes: int, *, title: str, columns: int = 6) -> None:
    """Save a PNG (atomically) showing, for every (site, replayed pairs, real pairs or None),
    a row of real images, of their label maps, of replayed images and of their label maps
    (``columns`` samples each). Images are shown from [-1, 1]; label maps by class id.
    Nothing without matplotlib."""
    if not drawing():
        return
    rows = [
        (f"{site}\n{kind} {part}", pairs[0] if part == "image" else pairs[1])
        for site, replay, real in sites
        for kind, pairs in (("real", real), ("replay", replay))
        if pairs is not None
        for part in ("image", "label")
    ]
    shown = min(columns, min(len(data) for _, data in rows))
    figure = new_figure(figsize=(1.4 * shown + 1.2, 1.4 * len(rows) + 0.4), dpi=100)
    axes = figure.subplots(len(rows), shown, squeeze=False)
    for (name, data), row in zip(rows, axes):
        row[0].set_ylabel(name, fontsize=7)
        for index, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if data.dim() == 4:  # images
                picture = ((data[index].float().cpu().movedim(0, -1) + 1) / 2).clamp(0, 1).numpy()
                ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture[..., :3], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(data[index].cpu().numpy(), cmap="viridis", vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_png(figure, path)
