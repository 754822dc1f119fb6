"""Paired comparison of two runs on the same test images (``siteflow-compare``).

Per test site, the difference A - B in per-image Dice (segmentation), in mean AUROC over
the labels (multi-label), or in each score of one class per image (balanced accuracy,
accuracy, macro F1, macro AUROC, quadratic kappa: one row each), with a paired bootstrap confidence interval and p-value that
resample the site's images (both runs' results of an image kept together), and for Dice a
Wilcoxon signed-rank test of the per-image differences. A run repeated over seeds enters
with each image's Dice averaged over its seeds (AUROC: the mean over seeds of each seed's
AUROC), so the test is over images, across seeds.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np
import torch

from siteflow.metrics import PairedTest, masked_auroc, paired_bootstrap_test, wilcoxon_signed_rank
from siteflow.metrics.multiclass import SCORES, multiclass_scores
from siteflow.reporting.runs import FinishedRun
from siteflow.reporting.samples import SiteSamples, read_samples


@dataclass(frozen=True)
class SiteComparison:
    """Run A against run B on one test site.

    Attributes:
        site, metric: the test site and ``"dice"``, ``"auroc"`` or a score of
            :data:`~siteflow.metrics.multiclass.SCORES`.
        n_images: the site's test images.
        seeds_a, seeds_b: how many seeds each run has.
        value_a, value_b: each run's mean Dice (mean AUROC) on the site.
        bootstrap: the difference A - B with its paired bootstrap interval and p-value.
        wilcoxon_p: the Wilcoxon signed-rank p-value (NaN for AUROC, not a per-image score).
    """

    site: str
    metric: str
    n_images: int
    seeds_a: int
    seeds_b: int
    value_a: float
    value_b: float
    bootstrap: PairedTest
    wilcoxon_p: float


def compare_runs(
    run_a: FinishedRun,
    run_b: FinishedRun,
    *,
    model_a: str | None = None,
    model_b: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[SiteComparison]:
    """Compare the test results of ``model_a`` in ``run_a`` with those of ``model_b`` in
    ``run_b`` (default: the models each run ends with: each site's own for a ``local`` run,
    else its last model in ``samples.csv``), site by site (one class per image: one
    comparison per score and site).

    Raises:
        ValueError: a run has no ``predict_test.py`` results, or the runs were tested on
            different sites or images (the names are listed).
    """
    samples = []
    for run, model in ((run_a, model_a), (run_b, model_b)):
        paths = run.test_results()
        if len(paths) != len(run.folders):
            raise ValueError(f"{run.path}: no test_results/samples.csv (for every seed): run predict_test.py on it first")
        samples.append(read_samples(paths, model, own_models=run.own_models))
    a, b = samples
    _check_same(sorted(a), sorted(b), "sites", run_a, run_b)
    results = []
    for site in a:
        _check_same(list(a[site].image_ids), list(b[site].image_ids), f"test images of site {site}", run_a, run_b)
        if a[site].classes is not None and b[site].classes is not None:
            results.extend(_compare_classes(site, a[site], b[site], n_resamples, seed))
        else:
            results.append(_compare_site(site, a[site], b[site], n_resamples, seed))
    return results


def comparison_csv(comparisons: list[SiteComparison]) -> str:
    """The comparisons as CSV text, one row per site."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in comparison_rows(comparisons):
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


COLUMNS = ("site", "metric", "n_images", "seeds_a", "seeds_b", "a", "b", "difference", "ci_low", "ci_high", "p_bootstrap", "p_wilcoxon")
"""The columns of :func:`comparison_rows`."""


def comparison_rows(comparisons: list[SiteComparison]) -> list[list]:
    """One row of :data:`COLUMNS` per comparison."""
    return [
        [c.site, c.metric, c.n_images, c.seeds_a, c.seeds_b, c.value_a, c.value_b,
         c.bootstrap.estimate, c.bootstrap.low, c.bootstrap.high, c.bootstrap.p_value, c.wilcoxon_p]
        for c in comparisons
    ]


def _compare_site(site: str, a: SiteSamples, b: SiteSamples, n_resamples: int, seed: int) -> SiteComparison:
    if a.dice is not None and b.dice is not None:
        dice_a, dice_b = a.dice.mean(1), b.dice.mean(1)
        differences = dice_a - dice_b
        test = paired_bootstrap_test(np.mean, differences, n_resamples=n_resamples, seed=seed)
        return SiteComparison(site, "dice", len(a.image_ids), a.dice.shape[1], b.dice.shape[1], float(dice_a.mean()),
                              float(dice_b.mean()), test, wilcoxon_signed_rank(differences)[1])
    if a.scores is None or b.scores is None:
        raise ValueError(f"site {site}: one run has Dice results, the other AUROC ones: they are different tasks")
    if not np.array_equal(a.labels, b.labels, equal_nan=True):
        raise ValueError(f"site {site}: the runs' test images have different labels: they are different test sets")
    arrays = (a.scores, b.scores, a.labels)
    test = paired_bootstrap_test(_auroc_difference, *arrays, n_resamples=n_resamples, seed=seed)
    return SiteComparison(site, "auroc", len(a.image_ids), a.scores.shape[1], b.scores.shape[1],
                          _mean_auroc(a.scores, a.labels), _mean_auroc(b.scores, b.labels), test, math.nan)


def _compare_classes(site: str, a: SiteSamples, b: SiteSamples, n_resamples: int, seed: int) -> list[SiteComparison]:
    """One comparison per score of :data:`SCORES`, each the difference of the two runs' mean
    over seeds of the score, resampled over the site's images."""
    if not np.array_equal(a.classes, b.classes) or a.class_names != b.class_names:
        raise ValueError(f"site {site}: the runs' test images have different classes: they are different test sets")
    results = []
    for score in SCORES:
        def difference(pa: np.ndarray, pb: np.ndarray, classes: np.ndarray, score: str = score) -> float:
            return _seed_mean(pa, classes, a.class_names, score) - _seed_mean(pb, classes, a.class_names, score)

        test = paired_bootstrap_test(difference, a.probabilities, b.probabilities, a.classes, n_resamples=n_resamples, seed=seed)
        results.append(SiteComparison(
            site, score, len(a.image_ids), a.probabilities.shape[1], b.probabilities.shape[1],
            _seed_mean(a.probabilities, a.classes, a.class_names, score), _seed_mean(b.probabilities, b.classes, b.class_names, score),
            test, math.nan,
        ))
    return results


def primary_metric(samples: SiteSamples) -> str:
    """The metric a study ranks by: Dice (segmentation), mean AUROC (multi-label), else the
    first score of :data:`~siteflow.metrics.multiclass.SCORES` (one class per image)."""
    if samples.dice is not None:
        return "dice"
    return "auroc" if samples.scores is not None else SCORES[0]


def site_value(samples: SiteSamples, metric: str, rows: np.ndarray | None = None) -> float:
    """``metric`` of one run on one site (mean over its seeds), as :func:`compare_runs`
    reports it, on the images ``rows`` (indices, repeats allowed: a resample; all by default)."""
    rows = np.arange(len(samples.image_ids)) if rows is None else rows
    if metric == "dice":
        return float(samples.dice[rows].mean())
    if metric == "auroc":
        return _mean_auroc(samples.scores[rows], samples.labels[rows])
    return _seed_mean(samples.probabilities[rows], samples.classes[rows], samples.class_names, metric)


def _seed_mean(probabilities: np.ndarray, classes: np.ndarray, class_names: tuple[str, ...], score: str) -> float:
    """Mean over seeds of ``score`` of probabilities (N, S, K) against classes (N,)."""
    labels = torch.from_numpy(classes)
    values = [multiclass_scores(torch.from_numpy(probabilities[:, s]), labels, class_names)[score] for s in range(probabilities.shape[1])]
    return float(np.mean(values))


def _mean_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over seeds of the mean AUROC over the known labels: scores (N, S, L), labels (N, L)
    with NaN where unknown."""
    known = torch.from_numpy(~np.isnan(labels) & ~np.isnan(scores[:, 0]))
    targets = torch.from_numpy(np.nan_to_num(labels))
    values = []
    for s in range(scores.shape[1]):
        auroc = masked_auroc(torch.from_numpy(np.nan_to_num(scores[:, s])), targets, known)
        finite = auroc[torch.isfinite(auroc)]
        values.append(finite.mean().item() if finite.numel() else math.nan)
    return float(np.mean(values))


def _auroc_difference(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> float:
    return _mean_auroc(scores_a, labels) - _mean_auroc(scores_b, labels)


def _check_same(names_a: list[str], names_b: list[str], what: str, run_a: FinishedRun, run_b: FinishedRun) -> None:
    """Raise naming what only one run has, if the runs' ``what`` differ."""
    if names_a == names_b:
        return
    only_a = sorted(set(names_a) - set(names_b))
    only_b = sorted(set(names_b) - set(names_a))
    raise ValueError(
        f"the runs were tested on different {what}: only in {run_a.path}: {_listed(only_a)}; only in {run_b.path}: {_listed(only_b)}"
    )


def _listed(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
