"""A markdown table of ``predict_test.py``'s results over seeds: for each run, its final
models' per-case means on every test site, and their mean over the sites, as mean +/- sd over
the run's seeds.

    python benchmarks/predict_table.py exps/demo3d/{local,joint,sequential,fedavg,fedbn}/s3 --metrics dice_mean hd95_mean

    python benchmarks/predict_table.py /tmp/exps_cls/demo_cls/{local,joint,fedavg}/s3 --metrics balanced_accuracy auroc --each --means-only

The final models are the ones a study ends with: each site's own model for ``local``, the last
model ``predict_test.py`` tested for every other strategy (sequential's after the last site, a
federation's last round, joint's pooled model). Each seed's ``test_results/summary.csv`` is
read (``<metric>_mean`` columns, or, for classification, one row per metric with its
``value``); the seeds' mean and standard deviation are printed (``--each``: and every seed's
value).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import mean_sd  # noqa: E402
from siteflow.reporting.runs import read_run  # noqa: E402


def final_rows(summary: Path, own_models: bool) -> dict[str, dict[str, str]]:
    """Test site -> the summary row of the model the study ends with on that site (its own
    with ``own_models``)."""
    with open(summary, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "metric" in rows[0]:
        rows = by_model_and_site(rows)
    if own_models:
        return {row["site"]: row for row in rows if row["model"] == row["site"]}
    last = rows[-1]["model"]
    return {row["site"]: row for row in rows if row["model"] == last}


def by_model_and_site(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows of one metric each (``model, site, metric, value``: classification's summary) as
    one row per model and site with ``<metric>_mean`` columns, in the file's order."""
    merged: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key = (row["model"], row["site"])
        merged.setdefault(key, {"model": row["model"], "site": row["site"]})[f"{row['metric']}_mean"] = row["value"]
    return list(merged.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (exps/<config>/<note>), each repeated over seeds or not")
    parser.add_argument("--metrics", nargs="+", default=["dice_mean"], help="summary.csv metrics (without the _mean suffix)")
    parser.add_argument("--each", action="store_true", help="follow each mean over the sites with every seed's value")
    parser.add_argument("--means-only", action="store_true", help="only the means over the sites, no column per site")
    args = parser.parse_args()
    header = None
    for path in args.runs:
        run = read_run(path)
        per_seed = []
        for seed, folder in run.folders.items():
            summary = folder / "test_results" / "summary.csv"
            if not summary.is_file():
                raise SystemExit(f"{summary} does not exist: run predict_test.py -c <config> -n <note> first")
            per_seed.append(final_rows(summary, run.own_models))
        sites = sorted(per_seed[0])
        if header is None:
            header = [] if args.means_only else [f"{metric} {site}" for metric in args.metrics for site in sites]
            header += [f"mean {metric}" for metric in args.metrics]
            print("| run | seeds | " + " | ".join(header) + " |")
            print("|---|---|" + "---|" * len(header))
        cells = []
        for metric in [] if args.means_only else args.metrics:
            cells += [mean_sd([float(rows[site][f"{metric}_mean"]) for rows in per_seed]) for site in sites]
        for metric in args.metrics:
            means = [statistics.mean(float(rows[site][f"{metric}_mean"]) for site in sites) for rows in per_seed]
            cells.append(mean_sd(means, each=args.each))
        print(f"| {run.name} | {len(per_seed)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
