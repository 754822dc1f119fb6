"""The site matrix written out: CSV, heatmap PNG and ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from siteflow.core.atomic import atomic_path, write_json, write_text
from siteflow.core.site_matrix import StageResult, matrix_csv, site_matrix, summarize

Summarizer = Callable[[Sequence[StageResult], Sequence[str], str], dict]


def plot_site_matrix(
    rows: Sequence[StageResult], site_names: Sequence[str], metric: str, path: Path, title: str
) -> None:
    """Save the site matrix of ``metric`` as an annotated heatmap PNG (atomically)."""
    matrix = site_matrix(rows, site_names, metric)
    height = 1.2 + 0.45 * len(rows)
    figure = Figure(figsize=(1.6 + 1.1 * len(site_names), height), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(site_names)), labels=site_names, rotation=30, ha="right")
    axes.set_yticks(range(len(rows)), labels=[row.stage for row in rows])
    axes.set_xlabel("test site")
    axes.set_ylabel("after training")
    axes.set_title(title, fontsize=9)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            axes.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_results(
    results_dir: Path,
    rows: Sequence[StageResult],
    site_names: Sequence[str],
    *,
    experiment: str,
    strategy: str,
    metrics: Sequence[str],
    summarizer: Summarizer = summarize,
) -> dict:
    """Write ``site_matrix_<metric>.csv/.png`` and ``summary.json`` (each metric summarised
    by ``summarizer``, the strategy's); returns the summary."""
    summary = {"experiment": experiment, "strategy": strategy, "sites": list(site_names), "stages": [r.stage for r in rows]}
    summary["metrics"] = list(metrics)
    for metric in metrics:
        write_text(results_dir / f"site_matrix_{metric}.csv", matrix_csv(rows, site_names, metric))
        plot_site_matrix(rows, site_names, metric, results_dir / f"site_matrix_{metric}.png", f"{experiment}: {metric}")
        summary[metric] = summarizer(rows, site_names, metric)
    write_json(results_dir / "summary.json", summary)
    return summary
