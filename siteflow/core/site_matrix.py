"""The site matrix and its summary.

``R[i][j]`` is a metric on site ``j``'s test split after training stage ``i`` (a site, a
cycle's site, the joint run, or a federated round). From it: the final mean over sites and
the backward transfer, mean over earlier sites ``j`` of ``R[final][j] - R[i_j][j]`` where
``i_j`` is the stage that last trained site ``j`` (negative = forgetting).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class StageResult:
    """The test results after one stage: ``values[site][metric]``."""

    stage: str
    trained_site: str | None
    values: dict[str, dict[str, float]]
    weights: str | None = None  # the stage's final weights, relative to the run folder
    own_weight_files: dict[str, str] | None = None  # each site's own final weights, where sites keep some


def site_matrix(rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> np.ndarray:
    """(num_stages, num_sites) array of ``metric``; NaN where a value is missing."""
    return np.array(
        [[row.values.get(site, {}).get(metric, np.nan) for site in site_names] for row in rows], dtype=float
    ).reshape(len(rows), len(site_names))


def summarize(
    rows: Sequence[StageResult], site_names: Sequence[str], metric: str, *, own_model_per_site: bool = False
) -> dict:
    """Final mean over sites, per-site final values and backward transfer for ``metric``.

    Args:
        own_model_per_site: every site keeps its own final model (the local strategy): site
            ``j``'s final value is that of the stage that trained ``j``, and backward transfer
            does not apply.
    """
    matrix = site_matrix(rows, site_names, metric)
    last_trained = {row.trained_site: i for i, row in enumerate(rows) if row.trained_site is not None}
    if own_model_per_site:
        final = {s: float(matrix[last_trained[s], j]) for j, s in enumerate(site_names) if s in last_trained}
        transfer = None
    else:
        final = {s: float(matrix[-1, j]) for j, s in enumerate(site_names)}
        earlier = [
            matrix[-1, j] - matrix[last_trained[s], j]
            for j, s in enumerate(site_names)
            if s in last_trained and last_trained[s] != len(rows) - 1
        ]
        earlier = [value for value in earlier if np.isfinite(value)]
        transfer = float(np.mean(earlier)) if earlier else None
    final = {site: value for site, value in final.items() if np.isfinite(value)}  # untested sites
    return {
        "final_mean": float(np.mean(list(final.values()))) if final else None,
        "final_per_site": final,
        "backward_transfer": transfer,
    }


def matrix_csv(rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> str:
    """The site matrix as CSV text: one row per stage, one column per test site."""
    matrix = site_matrix(rows, site_names, metric)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_stage", "trained_site", *site_names, "mean"])
    for row, values in zip(rows, matrix):
        mean = np.nanmean(values) if np.isfinite(values).any() else np.nan  # a row of NaN (one seed's std): NaN, silently
        writer.writerow([row.stage, row.trained_site or "", *(f"{v:.6f}" for v in values), f"{mean:.6f}"])
    return buffer.getvalue()


def matrix_table(rows: Sequence[StageResult], site_names: Sequence[str], metric: str) -> str:
    """The site matrix as an aligned text table, for the terminal."""
    matrix = site_matrix(rows, site_names, metric)
    width = max(12, *(len(s) + 2 for s in site_names))
    corner = "after \\ test"
    stage_width = max(len(corner), *(len(r.stage) for r in rows)) + 2
    lines = [f"{corner:<{stage_width}}" + "".join(f"{s:>{width}}" for s in site_names)]
    for row, values in zip(rows, matrix):
        lines.append(f"{row.stage:<{stage_width}}" + "".join(f"{v:>{width}.4f}" for v in values))
    return "\n".join(lines)
