"""Do relay's generators replay patients? A nearest-neighbour check of the replays a site
receives against the training images of the sites they stand for.

For every earlier site whose data is here, each replayed image's distance to its nearest
training image of that site is measured (the root-mean-square difference per pixel, over
every ``side`` x ``side`` window of the training images: at every position, or at the
smallest stride that cuts at most :data:`MAX_WINDOWS` windows per image), and
the same for the site's held-out (test) images as the baseline: how close an image the
generator never saw comes to the training set by chance. Replays much closer than held-out
images (a left-shifted histogram, a large ``closer_than_held_out`` share) point at
memorised training images; replays as far as held-out images do not.

What it does not prove: a replay far from every training image in pixel space can still
carry a patient's features (shape, texture, a lesion's position); a near copy that is
flipped, rotated, intensity-transformed or (on images large enough to need a stride above 1)
shifted between the windows can be missed; it says nothing about membership
inference on the solver, nor about sites whose data is not here. It is a screen, not a
privacy guarantee (DP training of the generators is what would give one).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from siteflow.config import SiteConfig
from siteflow.core.atomic import safe_name, write_json, write_text
from siteflow.core.pictures import drawing, new_figure, save_png
from siteflow.tasks import Task

LEAK_FILE = "replay_leak.json"
"""The summary of every stage's check, beside the site matrices."""


@dataclass(frozen=True)
class ReplayLeak:
    """The check of one earlier site's replays: the nearest-training-image distance of each
    replay and of each held-out image, and their summary. ``closer_than_held_out``: the share
    of replays closer to the training set than the closest held-out image."""

    site: str
    replay: list[float]
    held_out: list[float]
    replay_median: float
    held_out_median: float | None
    closer_than_held_out: float | None


MAX_WINDOWS = 1024
"""The most windows cut from one training image: the stride grows from 1 until they fit."""


def windows(images: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side`` x ``side`` windows of ``images`` (N, C, H, W) at the smallest stride that
    cuts at most :data:`MAX_WINDOWS` per image (the last row and column of windows included),
    flattened: (N * windows, C * side * side)."""
    height, width = images.shape[-2:]
    if side > min(height, width):
        raise ValueError(f"cannot cut {side}x{side} windows from {height}x{width} images")
    stride = 1
    while ((height - side) // stride + 2) * ((width - side) // stride + 2) > MAX_WINDOWS:
        stride += 1
    tops = sorted(set(range(0, height - side + 1, stride)) | {height - side})
    lefts = sorted(set(range(0, width - side + 1, stride)) | {width - side})
    crops = [images[:, :, top : top + side, left : left + side] for top in tops for left in lefts]
    return torch.stack(crops, 1).flatten(0, 1).flatten(1)


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """The root-mean-square per-pixel distance of each of ``queries`` (N, C, s, s) to its
    nearest window (see :func:`windows`) of ``references`` (M, C, H, W): (N,) float32."""
    side = queries.shape[-1]
    flat = queries.flatten(1).float()
    best = torch.full((len(flat),), float("inf"))
    per_chunk = max(1, chunk // len(windows(references[:1], side)))  # reference images per chunk of windows
    for start in range(0, len(references), per_chunk):
        crops = windows(references[start : start + per_chunk].float(), side)
        best = torch.minimum(best, torch.cdist(flat, crops).min(dim=1).values)
    return best / flat.shape[1] ** 0.5


def replay_leak(site: str, replay: torch.Tensor, training: torch.Tensor, held_out: torch.Tensor | None) -> ReplayLeak:
    """The check of ``site``'s replayed images (N, C, s, s) against its training images (M,
    C, H, W), with its held-out images (K, C, H, W) as the baseline (each cut to its centre
    window of side s), or None."""
    replay_distances = nearest_distances(replay, training)
    if held_out is None or len(held_out) == 0:
        return ReplayLeak(site, replay_distances.tolist(), [], float(replay_distances.median()), None, None)
    side = replay.shape[-1]
    top, left = (training.shape[-2] - side) // 2, (training.shape[-1] - side) // 2
    baseline = nearest_distances(held_out[:, :, top : top + side, left : left + side], training)
    closer = float((replay_distances < baseline.min()).float().mean())
    return ReplayLeak(
        site, replay_distances.tolist(), baseline.tolist(), float(replay_distances.median()), float(baseline.median()), closer
    )


def check_replay_leak(
    task: Task, stage: str, replays: Sequence[tuple[SiteConfig, torch.Tensor]], *, seed: int,
    result_path: Callable[[str], Path],
) -> list[ReplayLeak]:
    """Check the replayed images (N, C, s, s) of each earlier site whose data is here against
    all its training images and as many of its test images (drawn with ``seed``), and write
    ``replay_leak_<stage>.csv`` (one row per image), ``replay_leak_<stage>.png`` (the
    histograms) and the summary in ``replay_leak.json`` (by stage, then site)."""
    generator = torch.Generator().manual_seed(seed)
    leaks = []
    for site, images in replays:
        if not site.available:
            continue
        training = _images(task, site, "train", None, generator)
        if training is None:
            continue
        held_out = _images(task, site, "test", len(images), generator, size=tuple(training.shape[-2:]))
        leaks.append(replay_leak(site.task_name, images, training, held_out))
    if not leaks:
        return []
    name = safe_name(stage)
    write_text(result_path(f"replay_leak_{name}.csv"), _table(stage, leaks))
    plot_replay_leak(result_path(f"replay_leak_{name}.png"), leaks, title=f"before {stage}: nearest training image")
    summary_path = result_path(LEAK_FILE)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary[stage] = {leak.site: {k: v for k, v in asdict(leak).items() if k not in ("site", "replay", "held_out")} for leak in leaks}
    write_json(summary_path, summary)
    return leaks


def plot_replay_leak(path: Path, leaks: Sequence[ReplayLeak], *, title: str) -> None:
    """One histogram per site of the replays' and the held-out images' distances (PNG, atomically).
    Nothing without matplotlib."""
    if not drawing():
        return
    figure = new_figure(figsize=(3.6 * len(leaks), 3.0), dpi=110)
    for axes, leak in zip(np.atleast_1d(figure.subplots(1, len(leaks))), leaks):
        values = leak.replay + leak.held_out
        bins = np.linspace(0.0, max(values) * 1.05 + 1e-6, 21)
        axes.hist(leak.replay, bins=bins, alpha=0.6, label=f"replayed ({len(leak.replay)})")
        if leak.held_out:
            axes.hist(leak.held_out, bins=bins, alpha=0.6, label=f"held-out ({len(leak.held_out)})")
        axes.set_title(leak.site, fontsize=9)
        axes.set_xlabel("RMS distance to the nearest training image")
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_png(figure, path)


def _table(stage: str, leaks: Sequence[ReplayLeak]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["stage", "site", "kind", "index", "nearest_training_distance"])
    for leak in leaks:
        for kind, values in (("replay", leak.replay), ("held_out", leak.held_out)):
            writer.writerows([stage, leak.site, kind, index, f"{value:.6g}"] for index, value in enumerate(values))
    return buffer.getvalue()


def _images(
    task: Task, site: SiteConfig, split: str, count: int | None, generator: torch.Generator, *, size: tuple[int, int] | None = None
) -> torch.Tensor | None:
    """The images (N, C, H, W) of ``site``'s ``split`` as the solver sees them unaugmented:
    all of them, or ``count`` drawn at random, each resized (bilinear) to ``size`` (default:
    the first one's); None when the split is empty."""
    data = task.dataset([site], split)
    indices = list(range(data.num_samples)) if count is None else torch.randperm(data.num_samples, generator=generator)[:count].tolist()
    if not indices:
        return None
    images = [data[index]["image"].float() for index in indices]
    size = size or tuple(images[0].shape[-2:])
    return torch.cat([
        image[None] if tuple(image.shape[-2:]) == size else F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        for image in images
    ])
