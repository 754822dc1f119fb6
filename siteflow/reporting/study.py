"""The numbers of a study's report: every run ranked by the study's metric with a 95%
interval, compared with the reference run site by site (paired bootstrap over the site's
test images, Holm's correction over every comparison of the study), and its cost beside."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from siteflow.engine.results import spread
from siteflow.metrics import holm_adjust
from siteflow.reporting.compare import SiteComparison, compare_runs, primary_metric, site_value
from siteflow.reporting.runs import FinishedRun
from siteflow.reporting.samples import SiteSamples, read_samples

ALPHA = 0.05
"""The family-wise error rate of the study's comparisons (Holm)."""


@dataclass(frozen=True)
class RunCost:
    """What a run cost: mean training seconds per seed; federated runs: the mean bytes a site
    sent and received; private runs: the largest epsilon a site spent (None: not private)."""

    train_s: float
    bytes_per_site: float | None = None
    epsilon: float | None = None


@dataclass(frozen=True)
class StudyComparison:
    """One run against the reference on one site (``comparison``: A = the run, B = the
    reference), with its Holm-adjusted p-value."""

    run: str
    comparison: SiteComparison
    p_holm: float

    @property
    def verdict(self) -> int:
        """+1: the run is better than the reference on the site, -1 worse (Holm-adjusted p
        below :data:`ALPHA`), 0: no difference shown."""
        if not self.p_holm < ALPHA:
            return 0
        return 1 if self.comparison.bootstrap.estimate > 0 else -1


@dataclass(frozen=True)
class RankedRun:
    """A run's place in the ranking: its strategy, the mean over test sites of the metric
    (each site's value the mean over seeds) with a 95% bootstrap interval (images resampled
    within each site), its seeds, its cost, its comparisons with the reference, and the final
    mean of its site matrix over its seeds as its summary holds it (``{"mean", "std",
    "values"}``, None when the summary has none: the interval is over test images; how much the
    run varies from seed to seed is this)."""

    name: str
    strategy: str
    value: float
    low: float
    high: float
    seeds: int
    cost: RunCost
    comparisons: tuple[StudyComparison, ...]
    over_seeds: dict | None = None

    @property
    def better(self) -> list[str]:
        return [c.comparison.site for c in self.comparisons if c.verdict > 0]

    @property
    def worse(self) -> list[str]:
        return [c.comparison.site for c in self.comparisons if c.verdict < 0]


@dataclass(frozen=True)
class StudyResults:
    """A study's ranking (best first) and its comparisons with the reference."""

    title: str
    metric: str
    reference: str
    ranked: tuple[RankedRun, ...]
    comparisons: tuple[StudyComparison, ...]
    sites: tuple[str, ...]
    images: int
    n_resamples: int

    def run(self, name: str) -> RankedRun:
        return next(run for run in self.ranked if run.name == name)


def analyse_study(
    runs: Mapping[str, FinishedRun],
    reference: str,
    costs: Mapping[str, RunCost],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    title: str = "study",
) -> StudyResults:
    """Rank ``runs`` and compare each with ``runs[reference]`` (see the module docstring).

    The metric is the study's :func:`~siteflow.reporting.compare.primary_metric`; each
    comparison is :func:`~siteflow.reporting.compare.compare_runs` with ``n_resamples`` (as
    ``siteflow-compare``), the family of Holm's correction every (run, site) comparison of
    that metric.

    Raises:
        ValueError: a run has no test results, or was tested on other sites or images than
            the reference.
    """
    samples = {name: read_samples(run.test_results(), None, own_models=run.own_models) for name, run in runs.items()}
    metric = primary_metric(next(iter(samples[reference].values())))
    raw = [
        (name, c)
        for name, run in runs.items() if name != reference
        for c in compare_runs(run, runs[reference], n_resamples=n_resamples, seed=seed) if c.metric == metric
    ]
    adjusted = holm_adjust([c.bootstrap.p_value for _, c in raw]) if raw else []
    comparisons = tuple(StudyComparison(name, c, float(p)) for (name, c), p in zip(raw, adjusted))
    ranked = []
    for name, run in runs.items():
        value, low, high = overall_interval(samples[name], metric, n_resamples=n_resamples, seed=seed)
        ranked.append(RankedRun(
            name, run.config.get("strategy", {}).get("name", "?"), value, low, high, len(run.folders), costs[name],
            tuple(c for c in comparisons if c.run == name), final_mean_over_seeds(run, metric),
        ))
    ranked.sort(key=lambda r: (-r.value if math.isfinite(r.value) else math.inf, r.name))
    sites = tuple(samples[reference])
    images = sum(len(s.image_ids) for s in samples[reference].values())
    return StudyResults(title, metric, reference, tuple(ranked), comparisons, sites, images, n_resamples)


def overall_interval(sites: Mapping[str, SiteSamples], metric: str, *, n_resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """The mean over ``sites`` of ``metric`` (:func:`site_value`) with its 95% percentile
    interval over ``n_resamples`` resamples of each site's images (stratified by site)."""
    value = float(np.mean([site_value(s, metric) for s in sites.values()]))
    rng = np.random.default_rng(seed)
    resampled = np.zeros(n_resamples)
    for samples in sites.values():
        n = len(samples.image_ids)
        rows = rng.integers(0, n, size=(n_resamples, n))
        if metric == "dice":
            per_image = samples.dice.mean(axis=1)
            resampled += per_image[rows].mean(axis=1)
        else:
            resampled += np.array([site_value(samples, metric, r) for r in rows])
    resampled /= len(sites)
    finite = resampled[np.isfinite(resampled)]
    if not finite.size:
        return value, math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return value, float(low), float(high)


COMPARISON_COLUMNS = ("run", "reference", "site", "metric", "n_images", "seeds", "run_value", "reference_value",
                      "difference", "ci_low", "ci_high", "p_bootstrap", "p_holm", "p_wilcoxon")
"""The columns of ``comparisons.csv``."""


def comparisons_csv(results: StudyResults) -> str:
    """Every comparison of the study as CSV (``comparisons.csv``), six decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARISON_COLUMNS)
    for c in results.comparisons:
        s = c.comparison
        row = [c.run, results.reference, s.site, s.metric, s.n_images, s.seeds_a, s.value_a, s.value_b,
               s.bootstrap.estimate, s.bootstrap.low, s.bootstrap.high, s.bootstrap.p_value, c.p_holm, s.wilcoxon_p]
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def final_mean_over_seeds(run: FinishedRun, metric: str) -> dict | None:
    """The final mean of ``metric`` in ``run``'s ``summary.json`` as a spread over seeds
    (:func:`~siteflow.engine.results.spread`; a run of one seed as a spread of one value);
    None when the summary has none."""
    entry = run.summary.get(metric)
    final = entry.get("final_mean") if isinstance(entry, dict) else None
    return final if isinstance(final, dict) or final is None else spread([float(final)])
