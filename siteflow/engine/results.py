"""The site matrix written out: CSV, heatmap PNG and ``summary.json``, of one run or of a
study repeated over seeds (mean and spread)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from siteflow.core.atomic import write_json, write_text
from siteflow.core.pictures import drawing, new_figure, save_png
from siteflow.core.site_matrix import StageResult, matrix_csv, site_matrix, summarize
from siteflow.privacy.accounting import privacy_summary

Summarizer = Callable[[Sequence[StageResult], Sequence[str], str], dict]


def plot_site_matrix(
    rows: Sequence[StageResult], site_names: Sequence[str], metric: str, path: Path, title: str
) -> None:
    """Save the site matrix of ``metric`` as an annotated heatmap PNG (atomically); nothing
    without matplotlib (:func:`~siteflow.core.pictures.drawing`)."""
    if not drawing():
        return
    matrix = site_matrix(rows, site_names, metric)
    height = 1.2 + 0.45 * len(rows)
    figure = new_figure(figsize=(1.6 + 1.1 * len(site_names), height), dpi=120)
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
    save_png(figure, path)


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
    by ``summarizer``, the strategy's, and the privacy spent, if any: see
    :func:`~siteflow.privacy.accounting.privacy_summary`); returns the summary."""
    summary = {"experiment": experiment, "strategy": strategy, "sites": list(site_names), "stages": [r.stage for r in rows]}
    summary["metrics"] = list(metrics)
    for metric in metrics:
        write_text(results_dir / f"site_matrix_{metric}.csv", matrix_csv(rows, site_names, metric))
        plot_site_matrix(rows, site_names, metric, results_dir / f"site_matrix_{metric}.png", f"{experiment}: {metric}")
        summary[metric] = summarizer(rows, site_names, metric)
    summary.update(privacy_summary(results_dir))
    write_json(results_dir / "summary.json", summary)
    return summary


def spread(values: Sequence[float | None]) -> dict | None:
    """``{"mean", "std", "values"}`` of one number over seeds: ``std`` the sample standard
    deviation (ddof=1; None for one seed); None if any seed has no value."""
    if any(value is None for value in values):
        return None
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else None,
        "values": [float(v) for v in array],
    }


def write_seed_results(results_dir: Path, seed_summaries: Mapping[int, dict], seed_rows: Mapping[int, Sequence[StageResult]]) -> dict:
    """Write the results of one study repeated over seeds into ``results_dir``: the mean site
    matrix of each metric (``site_matrix_<metric>.csv/.png``), its standard deviation over the
    seeds (``site_matrix_<metric>_std.csv``), and ``summary.json``, which holds every value of
    each seed's summary as :func:`spread` (mean, std and each seed's value, in seed order).

    Args:
        seed_summaries: each seed's ``summary.json`` (see :func:`write_results`).
        seed_rows: each seed's recorded stages; every seed must have the same stages.

    Returns:
        The summary written.
    """
    seeds = list(seed_summaries)
    if len(seeds) == 0:
        raise ValueError("no seed to summarise")
    first = seed_summaries[seeds[0]]
    stages, sites, metrics = first["stages"], first["sites"], first["metrics"]
    for seed in seeds[1:]:
        if seed_summaries[seed]["stages"] != stages:
            raise ValueError(
                f"seed {seed} has the stages {seed_summaries[seed]['stages']}, seed {seeds[0]} has {stages}: "
                "the seeds must run the same study"
            )
    summary = {key: first[key] for key in ("experiment", "strategy", "sites", "stages", "metrics")}
    summary["seeds"] = seeds
    for metric in metrics:
        cube = np.stack([site_matrix(seed_rows[seed], sites, metric) for seed in seeds])  # (seeds, stages, sites)
        template = seed_rows[seeds[0]]
        mean_rows = _rows_of(template, sites, metric, cube.mean(axis=0))
        std_rows = _rows_of(template, sites, metric, cube.std(axis=0, ddof=1) if len(seeds) > 1 else np.full(cube.shape[1:], np.nan))
        write_text(results_dir / f"site_matrix_{metric}.csv", matrix_csv(mean_rows, sites, metric))
        write_text(results_dir / f"site_matrix_{metric}_std.csv", matrix_csv(std_rows, sites, metric))
        plot_site_matrix(mean_rows, sites, metric, results_dir / f"site_matrix_{metric}.png",
                         f"{first['experiment']}: {metric}, mean of {len(seeds)} seeds")
        per_seed = [seed_summaries[seed][metric] for seed in seeds]
        final_sites = sorted(set.intersection(*(set(s["final_per_site"]) for s in per_seed)), key=sites.index)
        summary[metric] = {
            "final_mean": spread([s["final_mean"] for s in per_seed]),
            "final_per_site": {site: spread([s["final_per_site"][site] for s in per_seed]) for site in final_sites},
            "backward_transfer": spread([s["backward_transfer"] for s in per_seed]),
        }
    write_json(results_dir / "summary.json", summary)
    return summary


def _rows_of(template: Sequence[StageResult], sites: Sequence[str], metric: str, matrix: np.ndarray) -> list[StageResult]:
    """The stages of ``template`` holding the (stages, sites) ``matrix`` as their ``metric``."""
    return [
        StageResult(row.stage, row.trained_site, {site: {metric: float(v)} for site, v in zip(sites, values)})
        for row, values in zip(template, matrix)
    ]
