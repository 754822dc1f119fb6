"""The report of a study (``siteflow-study``): its first screen answers "which strategy?" in
a sentence and one figure (the runs ranked with their intervals, cost beside quality); the
evidence follows (the ranking, every comparison with the reference site by site), then the
pictures and details of each run (test images, site matrices, learning curves, configs)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from siteflow.core.atomic import write_text
from siteflow.core.pictures import new_figure, patches
from siteflow.engine.progress import format_duration
from siteflow.reporting.figures import figure_base64
from siteflow.reporting.html import PValue, image, page, paragraph, table
from siteflow.reporting.report import curves_html, site_matrices_html, test_results_html, config_table
from siteflow.reporting.runs import FinishedRun
from siteflow.reporting.study import ALPHA, RankedRun, StudyResults

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_NAMES = {
    "dice": "Dice", "auroc": "mean AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1", "kappa": "quadratic kappa",
}
"""How the report names each metric."""

COLOURS = {1: "#2a9d3a", 0: "#6b7280", -1: "#d1495b"}
"""Better than the reference on some site and worse on none, no difference shown, worse on some site."""
REFERENCE_COLOUR = "#1f6feb"


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def standing(run: RankedRun, reference: str) -> int | None:
    """None for the reference; else +1, 0 or -1 as :data:`COLOURS` says."""
    if run.name == reference:
        return None
    if run.worse:
        return -1
    return 1 if run.better else 0


def mebibytes(value: float | None) -> str:
    return "" if value is None else f"{value / 2**20:,.1f} MB"


def answer(results: StudyResults) -> str:
    """The report's first sentence(s): which run ranks first, how it compares with the
    reference, and what it costs."""
    metric = metric_name(results.metric)
    best, reference = results.ranked[0], results.run(results.reference)
    n = len(results.sites)
    head = (f"{best.name} ranks first of {len(results.ranked)} runs with a mean {metric} of {best.value:.3f} "
            f"(95% interval {best.low:.3f} to {best.high:.3f}) over {n} test site(s)")
    if best.name == reference.name:
        better = [r.name for r in results.ranked if r.better]
        if better:
            tail = f"; it is the reference, yet {', '.join(better)} beat it on at least one site"
        else:
            tail = "; it is the reference, and no run is better than it on any site"
    else:
        tail = (f", against {reference.value:.3f} for the reference {reference.name}: better on "
                f"{len(best.better)} and worse on {len(best.worse)} of {n} sites")
    cost = f" It trains in {format_duration(best.cost.train_s)} per seed (the reference in {format_duration(reference.cost.train_s)})"
    if best.cost.bytes_per_site is not None:
        cost += f" and each site sends and receives {mebibytes(best.cost.bytes_per_site)}"
    if best.cost.epsilon is not None:
        cost += f", at a privacy budget of epsilon {best.cost.epsilon:.2f}"
    return head + tail + f" (paired tests per site, Holm-corrected, at {ALPHA})." + cost + "."


def method(results: StudyResults) -> str:
    """How the numbers were obtained, in one paragraph."""
    seeds = sorted({r.seeds for r in results.ranked})
    return (
        f"{metric_name(results.metric)}: each run's mean over the {len(results.sites)} test sites "
        f"({results.images} test images; each site's value averaged over {'/'.join(map(str, seeds))} seed(s)); "
        f"intervals: 95% bootstrap over the test images, resampled within each site ({results.n_resamples} resamples); "
        f"they do not show how a run varies from seed to seed: the ranking's column 'over seeds' does (the final mean "
        f"of each seed's site matrix, mean \u00b1 sd). "
        f"Each run is compared with the reference {results.reference} site by site on the same images "
        f"(paired bootstrap, {results.n_resamples} resamples, as siteflow-compare), and the "
        f"{len(results.comparisons)} p-values are corrected together (Holm)."
    )


def ranking_figure(results: StudyResults) -> Figure:
    """Left: each run's metric with its 95% interval, best on top, coloured by how it compares
    with the reference (legend); right: its training time per seed, annotated with the bytes
    a site sends and receives and the privacy budget where they apply. 760 px wide."""
    runs = list(results.ranked)
    height = 1.5 + 0.42 * len(runs)
    figure = new_figure(figsize=(7.6, height), dpi=100)
    left, right = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    positions = list(range(len(runs)))[::-1]
    for y, run in zip(positions, runs):
        mark = standing(run, results.reference)
        colour = REFERENCE_COLOUR if mark is None else COLOURS[mark]
        left.errorbar(run.value, y, xerr=[[run.value - run.low], [run.high - run.value]], fmt="o", color=colour, capsize=3)
        right.barh(y, run.cost.train_s / 60, color=colour, alpha=0.8)
        note = ", ".join(part for part in (mebibytes(run.cost.bytes_per_site) + (" per site" if run.cost.bytes_per_site is not None else ""),
                                           "" if run.cost.epsilon is None else f"\u03b5 {run.cost.epsilon:.1f}") if part)
        if note:
            right.text(run.cost.train_s / 60, y, " " + note, va="center", fontsize=8)
    reference = results.run(results.reference)
    left.axvline(reference.value, color=REFERENCE_COLOUR, linestyle="--", linewidth=1)
    left.set_yticks(positions, labels=[r.name + (" (reference)" if r.name == results.reference else "") for r in runs], fontsize=9)
    left.set_xlabel(f"{metric_name(results.metric)} (mean over sites, 95% interval)", fontsize=9)
    right.set_xlabel("training time per seed (min)", fontsize=9)
    longest = max(r.cost.train_s for r in runs) / 60
    right.set_xlim(0, longest * 1.9 if longest > 0 else 1)
    handles = [patches.Patch(color=REFERENCE_COLOUR, label="reference"), patches.Patch(color=COLOURS[1], label="better on a site"),
               patches.Patch(color=COLOURS[0], label="no difference shown"), patches.Patch(color=COLOURS[-1], label="worse on a site")]
    figure.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return figure


def ranking_table(results: StudyResults) -> str:
    header = ["rank", "run", "strategy", metric_name(results.metric), "95% interval", "over seeds (final mean \u00b1 sd)",
              "sites better / worse than the reference", "training time per seed", "sent and received per site", "privacy (\u03b5)"]
    rows = []
    for rank, run in enumerate(results.ranked, start=1):
        versus = "reference" if run.name == results.reference else f"{len(run.better)} / {len(run.worse)}"
        rows.append([rank, run.name, run.strategy, run.value, f"{run.low:.3f} to {run.high:.3f}", seed_spread(run.over_seeds), versus,
                     format_duration(run.cost.train_s), mebibytes(run.cost.bytes_per_site),
                     "" if run.cost.epsilon is None else f"{run.cost.epsilon:.2f}"])
    return table(header, rows, table_id="ranking")


def seed_spread(over_seeds: Mapping | None) -> str:
    """A spread over seeds (``{"mean", "std", "values"}``) as ``"0.514 \u00b1 0.200 (3 seeds)"``;
    one seed: ``"0.514 (1 seed)"``; None: empty."""
    if over_seeds is None:
        return ""
    count = len(over_seeds["values"])
    if over_seeds["std"] is None:
        return f"{over_seeds['mean']:.3f} ({count} seed{'s' if count > 1 else ''})"
    return f"{over_seeds['mean']:.3f} \u00b1 {over_seeds['std']:.3f} ({count} seeds)"


def comparison_table(results: StudyResults) -> str:
    header = ["run", "site", "test images", "seeds", "run", "reference", "difference", "95% interval",
              "p (bootstrap)", "p (Holm)", "p (Wilcoxon)"]
    rows = []
    for c in results.comparisons:
        s = c.comparison
        rows.append([c.run, s.site, s.n_images, s.seeds_a, s.value_a, s.value_b, s.bootstrap.estimate,
                     f"{s.bootstrap.low:+.3f} to {s.bootstrap.high:+.3f}", PValue(s.bootstrap.p_value), PValue(c.p_holm),
                     PValue(s.wilcoxon_p)])
    note = paragraph(f"difference = run - reference ({results.reference}); Holm's correction over all "
                     f"{len(results.comparisons)} comparisons; p-values of a bootstrap of B resamples are at least 2/(B+1).", "method")
    return note + table(header, rows, table_id="comparisons")


def write_study_report(
    results: StudyResults, runs: Mapping[str, FinishedRun], path: Path, *, missing: Sequence[str] = ()
) -> Path:
    """Write the study's report to ``path`` (atomically, self-contained: every picture embedded)."""
    intro = (
        f'<p class="answer" id="answer">{html.escape(answer(results))}</p>'
        + image(figure_base64(ranking_figure(results)), "the runs ranked, with their cost")
        + paragraph(method(results), "method")
    )
    if missing:
        intro += paragraph(f"Not in this report (not finished or failed): {', '.join(missing)}.", "method")
    order = [runs[r.name] for r in results.ranked]
    sections = [
        ("Ranking", ranking_table(results)),
        ("Against the reference, site by site", comparison_table(results)),
        ("Test images: best and worst per site", "".join(test_results_html(run) for run in order)),
        ("Site matrices", "".join(site_matrices_html(run) for run in order)),
        ("Learning curves", "".join(curves_html(run) for run in order)),
        ("Configs", config_table(order)),
    ]
    write_text(path, page(f"Which strategy? Study {results.title}", sections, intro=intro))
    return path
