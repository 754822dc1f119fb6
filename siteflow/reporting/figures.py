"""Pictures of a run for the HTML report, as base64 PNG text (matplotlib, the ``report`` extra)."""

from __future__ import annotations

import base64
import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from siteflow.core.pictures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CURVE_STAGES = 12
"""Learning curves are drawn for at most this many stages (the first ones) per run."""


def figure_base64(figure: Figure) -> str:
    """``figure`` as base64 text of a PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def file_base64(path: Path, max_width: int | None = None) -> str:
    """The PNG file ``path`` as base64 text; with ``max_width``, shrunk (aspect kept) to at
    most that many pixels wide first (a tall grid keeps its rows readable)."""
    if max_width is None:
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")
    with Image.open(path) as picture:
        if picture.width > max_width:
            picture = picture.resize((max_width, round(picture.height * max_width / picture.width)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="png", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curves(logs: Path, stages: Sequence[str]) -> Figure | None:
    """One panel per stage with a CSV log (``logs/<stage>/csv/metrics.csv``): the training
    loss per epoch and every validation value per epoch; None when no stage has a log."""
    curves = [(stage, _epoch_series(path)) for stage in stages if (path := logs / stage / "csv" / "metrics.csv").is_file()]
    curves = [(stage, series) for stage, series in curves if series][:MAX_CURVE_STAGES]
    if not curves:
        return None
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure = new_figure(figsize=(4.2 * columns, 2.8 * rows), dpi=90)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (stage, series) in zip(axes, curves):
        for name, (epochs, values) in series.items():
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    figure.tight_layout()
    return figure


def round_curves(matrix_csv: Path, metric: str) -> Figure | None:
    """Each site's ``metric`` test by test over the rows of a site matrix (``matrix_csv``,
    ``site_matrix_<metric>.csv``) that test one model of all sites (a federated round's: no
    trained site), one line per site: a site that does not learn shows as a flat line in the
    first rounds. None with fewer than two such rows (sites trained in turn, a joint run)."""
    with open(matrix_csv, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if not row["trained_site"]]
    if len(rows) < 2:
        return None
    sites = [name for name in rows[0] if name not in ("after_stage", "trained_site", "mean")]
    figure = new_figure(figsize=(6.0, 3.2), dpi=90)
    ax = figure.subplots()
    steps = list(range(1, len(rows) + 1))
    for site in sites:
        ax.plot(steps, [float(row[site]) for row in rows], marker="o", markersize=3, label=site)
    ax.set_xticks(steps, labels=[row["after_stage"] for row in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title(f"{metric} of each site, test by test", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _epoch_series(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Epoch-level columns of a Lightning CSV log (``train/loss_epoch``, ``val/*``) as
    (epochs, values), the empty cells skipped."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [n for n in (rows[0].keys() if rows else []) if n == "train/loss_epoch" or n.startswith("val/")]
    series = {}
    for name in names:
        points = [(int(row["epoch"]), float(row[name])) for row in rows if row.get(name)]
        if points:
            series[name] = ([e for e, _ in points], [v for _, v in points])
    return series
