"""The per-image test results of ``predict_test.py`` (``test_results/samples.csv``) read back."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SiteSamples:
    """One model's per-image results on one test site, over one or more seeds.

    Attributes:
        image_ids: the site's test images, sorted.
        dice: (N, S) float64 per-image mean foreground Dice of each of S seeds
            (segmentation), else None.
        scores: (N, S, L) float64 per-image score of each label (multi-label; NaN where
            the site does not know the label), else None.
        labels: (N, L) float64 in {0, 1}, NaN where unknown (multi-label), else None.
        probabilities: (N, S, K) float64 class probabilities of each seed (one class per
            image), else None.
        classes: (N,) int64 true class ids (one class per image), else None.
        class_names: the K classes (one class per image).
    """

    image_ids: tuple[str, ...]
    dice: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    classes: np.ndarray | None = None
    class_names: tuple[str, ...] = ()


def read_samples(paths: dict[int | None, Path], model: str | None, *, own_models: bool = False) -> dict[str, SiteSamples]:
    """The rows of ``model`` in each seed's ``samples.csv`` as :class:`SiteSamples` by test
    site. Default: the models the study ends with: with ``own_models`` (a ``local`` study),
    each site's own model (the rows whose model is named as their site), else the last model
    of the first file.

    Raises:
        ValueError: a file lacks the model, or the seeds were tested on different images.
    """
    tables = {seed: _read_csv(path) for seed, path in paths.items()}
    first_path = next(iter(paths.values()))
    if model is None and not own_models:
        model = list(dict.fromkeys(row["model"] for row in next(iter(tables.values()))))[-1]
    by_site: dict[str, list[dict[str, dict[str, str]]]] = {}
    for seed, rows in tables.items():
        chosen = [row for row in rows if row["model"] == (row["site"] if model is None else model)]
        models = ", ".join(sorted({row["model"] for row in rows}))
        if not chosen:
            wanted = "model named as its test site" if model is None else f"model named {model!r}"
            raise ValueError(f"{paths[seed]}: no {wanted} (models: {models})")
        if model is None and (alone := sorted({row["site"] for row in rows} - {row["site"] for row in chosen})):
            raise ValueError(
                f"{paths[seed]}: a local run is compared with each site's own model, and test site(s) {', '.join(alone)} "
                f"have none (models: {models}): run predict_test.py on every stage, or name the model"
            )
        sites: dict[str, dict[str, dict[str, str]]] = {}
        for row in chosen:
            sites.setdefault(row["site"], {})[row["image_id"]] = row
        for site, images in sites.items():
            by_site.setdefault(site, []).append(images)
    header = list(tables[next(iter(tables))][0].keys())
    result = {}
    for site, seeds in by_site.items():
        ids = tuple(sorted(seeds[0]))
        if len(seeds) != len(tables) or any(tuple(sorted(images)) != ids for images in seeds):
            raise ValueError(f"{first_path.parent.parent.parent}: its seeds were tested on different images of site {site}")
        result[site] = _site_samples(ids, seeds, header)
    return result


def _site_samples(ids: tuple[str, ...], seeds: list[dict[str, dict[str, str]]], header: list[str]) -> SiteSamples:
    if "dice_mean" in header:
        return SiteSamples(ids, dice=np.array([[float(images[i]["dice_mean"]) for images in seeds] for i in ids]))
    labels = [column[2:] for column in header if column.startswith("p_")]
    if labels and "label" in header:  # one class per image: p_<class> and the true class's name
        probabilities = np.array([[[float(images[i][f"p_{name}"]) for name in labels] for images in seeds] for i in ids])
        classes = np.array([labels.index(seeds[0][i]["label"]) for i in ids], dtype=np.int64)
        return SiteSamples(ids, probabilities=probabilities, classes=classes, class_names=tuple(labels))
    if not labels:
        raise ValueError(f"samples.csv has neither a dice_mean column nor p_<label> columns (columns: {', '.join(header)})")
    scores = np.array([[[_number(images[i][f"p_{name}"]) for name in labels] for images in seeds] for i in ids])
    truth = np.array([[_number(seeds[0][i][f"y_{name}"]) for name in labels] for i in ids])
    return SiteSamples(ids, scores=scores, labels=truth)


def _number(text: str) -> float:
    return float(text) if text != "" else np.nan


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no test results in it")
    return rows
