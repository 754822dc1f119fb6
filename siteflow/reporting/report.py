"""The HTML report of one or more finished runs (``siteflow-report``): one self-contained
file, every picture embedded, no network needed to open it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from siteflow.core.atomic import safe_name, write_text
from siteflow.reporting.compare import COLUMNS, compare_runs, comparison_rows
from siteflow.reporting.figures import figure_base64, file_base64, learning_curves, round_curves
from siteflow.reporting.html import PValue, heading, image, page, paragraph, table
from siteflow.reporting.runs import FinishedRun

OVERLAY_WIDTH = 660
"""Overlay pictures are shrunk to at most this many pixels wide (their titles stay readable)."""

SUMMARY_COLUMNS = ("run", "metric", "quantity", "site", "value", "std over seeds", "each seed")
"""The columns of the report's summary table (``id="summary"``)."""


def write_report(runs: Sequence[FinishedRun], path: Path, *, n_resamples: int = 2000) -> Path:
    """Write the report of ``runs`` to ``path`` (atomically), the answers first: the summary
    table, paired comparisons of every run with the first (where both have test results),
    site-matrix heatmaps, ``predict_test.py`` results with their intervals and the best and
    worst test images per site, learning curves, and the runs' configs side by side."""
    if not runs:
        raise ValueError("no run to report on")
    sections = [
        ("Summary", table(SUMMARY_COLUMNS, [row for run in runs for row in summary_rows(run)], table_id="summary")),
        ("Paired comparisons", _comparisons(runs, n_resamples)),
        ("Site matrices", "".join(site_matrices_html(run) for run in runs)),
        ("Test results", "".join(test_results_html(run) for run in runs)),
        ("Learning curves", "".join(curves_html(run) for run in runs)),
        ("Configs", config_table(runs)),
    ]
    write_text(path, page(f"siteflow report: {', '.join(run.name for run in runs)}", sections))
    return path


def summary_rows(run: FinishedRun) -> list[list]:
    """The rows of a run's ``summary.json``: per metric, the final mean, the backward transfer
    and each site's final value; over seeds, their mean, std and each seed's value."""
    rows = []
    for metric in run.summary.get("metrics", []):
        values = run.summary[metric]
        entries = [("final_mean", "", values["final_mean"]), ("backward_transfer", "", values["backward_transfer"])]
        entries += [("final_per_site", site, value) for site, value in values["final_per_site"].items()]
        for quantity, site, value in entries:
            if isinstance(value, dict):  # over seeds
                each = ", ".join(f"{v:.4f}" for v in value["values"])
                rows.append([run.name, metric, quantity, site, value["mean"], value["std"], each])
            else:
                rows.append([run.name, metric, quantity, site, value, None, ""])
    return rows


def config_table(runs: Sequence[FinishedRun]) -> str:
    """The config keys whose values differ between the runs (table ``config-differences``),
    then every key path with each run's value, folded (table ``configs``, differing rows
    marked)."""
    flat = [_flatten({k: v for k, v in run.config.items() if k != "source"}) for run in runs]
    keys = sorted(set().union(*flat))
    rows = [[key, *(str(f.get(key, "")) for f in flat)] for key in keys]
    differs = ["differs" if len({r for r in row[1:]}) > 1 else "" for row in rows]
    header = ["key", *(run.name for run in runs)]
    differing = [row for row, mark in zip(rows, differs) if mark]
    if len(runs) == 1:
        differences = ""
    elif differing:
        differences = table(header, differing, table_id="config-differences")
    else:
        differences = paragraph("The runs' configs are the same.")
    every = table(header, rows, table_id="configs", row_classes=differs)
    return f"{differences}<details><summary>Every key ({len(rows)})</summary>{every}</details>"


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}.{key}".lstrip(".")).items()}
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def site_matrices_html(run: FinishedRun) -> str:
    """Each metric's site-matrix heatmap; for a federated run, the first metric of each site
    round by round too (:func:`~siteflow.reporting.figures.round_curves`)."""
    metrics = run.summary.get("metrics", [])
    pictures = [
        image(file_base64(path), f"{run.name}: site matrix of {metric}")
        for metric in metrics
        if (path := run.path / "results" / f"site_matrix_{metric}.png").is_file()
    ]
    matrix = run.path / "results" / f"site_matrix_{metrics[0]}.csv" if metrics else None
    if matrix is not None and matrix.is_file() and (figure := round_curves(matrix, metrics[0])) is not None:
        pictures.append(image(figure_base64(figure), f"{run.name}: {metrics[0]} of each site round by round"))
    return heading(run.name) + "".join(pictures)


def curves_html(run: FinishedRun) -> str:
    folder = next(iter(run.folders.values()))
    figure = learning_curves(folder / "logs", run.summary.get("stages", []))
    which = f" (seed {next(iter(run.folders))})" if run.repeated else ""
    body = image(figure_base64(figure), f"{run.name}: learning curves") if figure is not None else paragraph("no CSV logs")
    return heading(f"{run.name}{which}") + body


def test_results_html(run: FinishedRun) -> str:
    """Per seed: the intervals of ``summary.csv`` and, per site, the best and worst image of the
    model the study ends with there by Dice; for the first seed, the overlay pictures of each site (see
    :func:`_extremes`)."""
    parts = [heading(run.name)]
    files = run.test_results()
    if not files:
        return parts[0] + paragraph("no predict_test.py results")
    for index, (seed, samples_file) in enumerate(files.items()):
        label = "" if seed is None else f"seed {seed}: "
        header, rows = _read(samples_file.with_name("summary.csv"))
        keep = [i for i, name in enumerate(header) if name in ("model", "site", "n", "label", "metric", "value", "ci_low", "ci_high")
                or name.startswith(("dice_mean_", "auroc"))]
        parts.append(paragraph(f"{label}means over test images with 95% intervals"))
        parts.append(table([column_label(header[i]) for i in keep], [[_value(row[i]) for i in keep] for row in rows], table_id=f"test-{run.name}-{seed}"))
        parts.append(_extremes(samples_file, label, overlays=index == 0, own_models=run.own_models))
    return "".join(parts)


def _extremes(samples_file: Path, label: str, *, overlays: bool, own_models: bool) -> str:
    """Per site, the best and the worst test image of the model the study ends with there
    (each site's own with ``own_models``, a ``local`` study; else the last model) by mean Dice
    (ties by image id); with ``overlays``, the model's overlay grid of the site and each of
    the two images' own overlay (image, truth, prediction), where ``predict_test.py`` saved
    them."""
    header, rows = _read(samples_file)
    if "dice_mean" not in header:
        return ""
    model_column, column, site_column = header.index("model"), header.index("dice_mean"), header.index("site")
    last = rows[-1][model_column]
    parts = []
    for site in dict.fromkeys(row[site_column] for row in rows):
        model = site if own_models else last
        scored = sorted((float(row[column]), row[header.index("image_id")]) for row in rows if row[model_column] == model and row[site_column] == site)
        if not scored:
            parts.append(paragraph(f"{label}{model} on {site}: not tested (run predict_test.py on every stage)"))
            continue
        (worst, worst_id), (best, best_id) = scored[0], scored[-1]
        folder = samples_file.parent / "overlays" / safe_name(model)
        parts.append(paragraph(f"{label}{model} on {site}: best image {best_id} (Dice {best:.4f}), worst {worst_id} (Dice {worst:.4f})"))
        if not overlays:
            continue
        grid = folder / f"{safe_name(site)}.png"
        if grid.is_file():
            parts.append(image(file_base64(grid, OVERLAY_WIDTH), f"{model} on {site}: image, truth, prediction"))
        for kind, image_id, dice in (("best", best_id, best), ("worst", worst_id, worst)):
            case = folder / safe_name(site) / f"{kind}_{safe_name(image_id)}.png"
            if case.is_file():
                parts.append(image(file_base64(case, OVERLAY_WIDTH), f"{model} on {site}: {kind} image {image_id} (Dice {dice:.4f}): image, truth, prediction"))
    return "".join(parts)


def _comparisons(runs: Sequence[FinishedRun], n_resamples: int) -> str:
    if len(runs) < 2:
        return paragraph("one run: nothing to compare")
    parts = []
    for other in runs[1:]:
        title = f"A = {runs[0].name}, B = {other.name}"
        try:
            rows = comparison_rows(compare_runs(runs[0], other, n_resamples=n_resamples))
        except ValueError as error:
            parts.append(paragraph(f"{title}: not compared: {error}"))
            continue
        rows = [[PValue(v) if column.startswith("p_") else v for column, v in zip(COLUMNS, row)] for row in rows]
        parts.append(paragraph(title) + table(COLUMNS, rows, table_id=f"compare-{other.name}"))
    return "".join(parts)


INTERVAL_LABELS = {
    "mean": "", "ci_low": " (t interval, low)", "ci_high": " (t interval, high)",
    "boot_low": " (bootstrap, low)", "boot_high": " (bootstrap, high)",
}
"""How the columns of ``summary.csv`` of ``predict_test.py`` read in a report, by suffix."""


def column_label(name: str) -> str:
    """A ``summary.csv`` column as a reader reads it: ``dice_mean_boot_low`` -> ``Dice
    (bootstrap, low)``, ``n`` -> ``test images``; other names as they are."""
    if name == "n":
        return "test images"
    if name in ("ci_low", "ci_high"):
        return f"95% interval, {name[3:]}"
    for suffix, label in INTERVAL_LABELS.items():
        if name.startswith("dice_mean_") and name == f"dice_mean_{suffix}":
            return f"Dice{label}"
        if name.startswith("auroc") and name.endswith(f"_{suffix}"):
            return f"{name[: -len(suffix) - 1].replace('_', ' ').replace('auroc', 'AUROC')}{label}"
    return name.replace("_", " ")


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def _value(text: str) -> object:
    """A CSV cell as a number where it is one."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
