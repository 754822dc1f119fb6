"""The model card of an exported model: ``model_card.json`` (read back by
:func:`~siteflow.inference.sources.from_export`) and ``MODEL_CARD.md`` for people."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from siteflow.inference.sources import LoadedModel

CARD_FORMAT = "siteflow-model-card"
CARD_VERSION = 1


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_json(model: LoadedModel, *, version: str, created: str, weights_sha256: str, files: dict[str, str], graphs: dict[str, Any]) -> dict[str, Any]:
    """The card's JSON: the recipe (task, classes, input and preprocessing, inference,
    network), the weights' digest (of the tensors, as the hand-over files compute it), every
    model file's SHA-256, the graphs' sizes, and the provenance (strategy, sites and their
    sample counts, seed, the run's site matrix and test metrics)."""
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "siteflow_version": version,
        "created": created,
        "recipe": model.recipe.to_json(),
        "weights_sha256": weights_sha256,
        "files": files,
        "graphs": graphs,
        "provenance": model.provenance,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a card's JSON."""
    recipe, provenance = card["recipe"], card["provenance"]
    source = recipe["input"]
    lines = [
        f"# Model card: {recipe['name']}",
        "",
        f"Exported by siteflow {card['siteflow_version']} on {card['created']}.",
        "",
        "## What it does",
        "",
        f"- Task: {recipe['task']}; outputs ({len(recipe['class_names'])}): {', '.join(recipe['class_names'])}",
    ]
    if recipe.get("labels"):
        lines.append(f"- Answers only its site's labels: {', '.join(recipe['labels'])}")
    if recipe.get("thresholds"):
        lines.append("- Decision thresholds (Youden's J on validation data): " + ", ".join(
            f"{name} {value:.4f}" for name, value in zip(recipe["class_names"], recipe["thresholds"])))
    lines += [
        f"- Network: {recipe['model_name']} {recipe['model_kwargs']}",
        f"- Input: {source['channels']} channel(s), " + (
            f"volumes, preprocessing {source['preprocessing']}" if source["kind"] == "volume"
            else f"2D {source['kind']} images resized to {source['img_size'] or 'native size'}, intensities to {source['out_range']}"),
        f"- Inference: {recipe['inference']}",
        "",
        "## How it was trained",
        "",
    ]
    for key in ("config", "strategy", "seed", "run", "stage", "site", "handover"):
        if key in provenance:
            lines.append(f"- {key}: {provenance[key]}")
    sites = provenance.get("sites") or provenance.get("trained_by") or []
    if sites:
        lines += ["", "| site | training samples |", "|---|---|"] + [f"| {s['site']} | {s['samples']} |" for s in sites]
    if provenance.get("test_metrics"):
        lines += ["", "Test metrics of this model, per test site:", "", "| site | " + " | ".join(_metric_names(provenance["test_metrics"])) + " |"]
        names = _metric_names(provenance["test_metrics"])
        lines.append("|---" * (len(names) + 1) + "|")
        for site, values in provenance["test_metrics"].items():
            lines.append(f"| {site} | " + " | ".join(f"{values.get(n, float('nan')):.4f}" for n in names) + " |")
    for metric, table in (provenance.get("site_matrix") or {}).items():
        lines += ["", f"Site matrix of {metric} (row: after training, column: test site):", "", "```", table.rstrip(), "```"]
    lines += ["", "## Files", "", "| file | SHA-256 |", "|---|---|"] + [f"| {name} | `{digest}` |" for name, digest in card["files"].items()]
    lines += ["", f"Weights SHA-256 (tensors): `{card['weights_sha256']}`", ""]
    for kind, graph in card["graphs"].items():
        size = "any batch and spatial size" if graph["dynamic"] else f"the fixed size {graph['example_shape']}"
        lines.append(f"- {kind}: `{graph['file']}`, takes {size}")
    return "\n".join(lines) + "\n"


def _metric_names(metrics: dict[str, dict[str, float]]) -> list[str]:
    return sorted({name for values in metrics.values() for name in values})
