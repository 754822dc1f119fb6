"""Relay against sequential fine-tuning on harder synthetic vessel sites, over seeds.

    OMP_NUM_THREADS=2 python benchmarks/relay.py [--seeds 0 1 2] [--epochs 40] [--num-replica 10] [--gpus 0]
        [--patch-size 128] [--base-channels 32] [--site-shift 0.3] [--variants sequential relay relay_uniform relay_weighted relay_weighted_merge relay_no_merge relay_distill_batch
        relay_quarter relay_append relay_teacher_labels relay_strokes lwf joint]
        [--profile real --train-per-site 8 --test-per-site 4] [--write BENCHMARKS.md]

Three synthetic vessel sites (DRIVE, STARE and CHASE_DB1 layouts) drawn at 288-320 pixels and
read at ``--img-size`` (256), trained on whole images or, with ``--patch-size``, on augmented
patches (a third centred on vessels) and tested by Gaussian-weighted sliding windows, as the
shipped real-data configs do: thin, faint vessels on a blotchy retina, each site with its own
colour cast, contrast, blur and noise (and, with ``--site-shift``, its own vessel width and
contrast: DRIVE's thinnest and faintest, CHASE_DB1's widest and strongest). ``--profile real``
draws each site as its release looks instead, read at native size (565 to 999 pixels, vessels
1-13 pixels wide on a textured retina), where fine-tuning forgets little. Every variant
trains the same U-Net over the sites in order with the same seed; relay replays patches of
``--replay-size``, each earlier site's
replays weighted by their measured quality (``relay_uniform``: all counting fully, as the
reference). For each variant and seed it prints the final mean Dice, the backward
transfer (negative: forgetting) and the training seconds per epoch; then the means over seeds,
and relay's replay quality before each site (see ``siteflow.strategies.relay.replay_quality``).
The run folders stay under ``--out`` (site matrices, replay grids) with each run's numbers
(``result.json``): a second call reads finished runs back instead of training them again. ``--tiny`` shrinks everything
to check that the script runs (seconds per run, meaningless numbers).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import machine, mean_sd, write_section  # noqa: E402
from benchmarks.vessel_runs import SITES, cached_run, vessel_study  # noqa: E402
from siteflow.config import deep_merge, load_config  # noqa: E402
from siteflow.engine.runner import ExperimentRun  # noqa: E402

HARD_VESSELS = {"native_size": [288, 320], "vessel_width": 0.6, "vessel_contrast": 0.6, "texture": 0.25}
VARIANTS: dict[str, dict[str, Any]] = {
    "sequential": {"name": "sequential"},
    "relay": {"name": "relay", "kwargs": {"merge": "samples"}},
    "relay_weighted": {"name": "relay", "kwargs": {"merge": "samples", "replay_weighting": "quality"}},
    "relay_uniform": {"name": "relay", "kwargs": {"merge": "samples", "replay_weighting": "uniform"}},
    "relay_weighted_merge": {"name": "relay", "kwargs": {"merge": "quality", "replay_weighting": "quality"}},
    "relay_no_merge": {"name": "relay", "kwargs": {"merge": "none"}},
    "relay_distill_batch": {"name": "relay", "kwargs": {"merge": "samples", "distill_on": "batch"}},
    "relay_quarter": {"name": "relay", "kwargs": {"merge": "samples", "replay_fraction": 0.25}},
    "relay_append": {"name": "relay", "kwargs": {"merge": "samples", "replay_batch": "append"}},
    "relay_teacher_labels": {"name": "relay", "kwargs": {"merge": "samples", "replay_labels": "teacher"}},
    "relay_strokes": {"name": "relay", "kwargs": {"merge": "samples", "label_generator": "strokes"}},
    "lwf": {"name": "lwf"},
    "joint": {"name": "joint"},
}
QUALITY = ("solver_dice", "diversity", "foreground", "components")
spread = functools.partial(mean_sd, plus_minus="±")
"""The mean +/- sd of BENCHMARKS.md's relay tables."""


class TimedRun(ExperimentRun):
    """An experiment run that adds up the wall time and epochs of its training steps."""

    fit_seconds = 0.0
    fit_epochs = 0

    def fit(self, stage, site_runs, start, trainee, *, save_dir, epochs=None, seed_offset=0):
        began = time.perf_counter()
        weights = super().fit(stage, site_runs, start, trainee, save_dir=save_dir, epochs=epochs, seed_offset=seed_offset)
        self.fit_seconds += time.perf_counter() - began
        self.fit_epochs += epochs if epochs is not None else site_runs[0].train.epochs
        return weights


def study(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """The config of ``variant`` at ``seed`` (plain data, as YAML would give it)."""
    strategy = deep_merge(VARIANTS[variant], {"kwargs": {"replay_size": args.replay_size}} if VARIANTS[variant]["name"] == "relay" else {})
    dataset: dict[str, Any] = {"root_path": str(args.out / "data"), "val_fraction": 0.15, "num_replica": args.num_replica}
    if args.profile == "real":  # each site as its release looks, read at native size (vessels of real widths)
        dataset["profile"] = "real"
    else:
        dataset.update(HARD_VESSELS, img_size=[args.img_size] * 2)
    for key in ("train_per_site", "test_per_site"):
        if getattr(args, key) is not None:
            dataset[key] = getattr(args, key)
    model = {"base_channels": args.base_channels, "depth": 4}
    train: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size, "precision": "32-true", "loss": {"name": "dice_ce"},
                             "optimizer": {"name": "Adam", "kwargs": {"lr": 1e-3}}, "val_every_n_epochs": args.epochs}
    if args.site_shift:
        dataset["site_shift"] = args.site_shift
    if args.patch_size is not None:
        dataset.update(patch_size=[args.patch_size] * 2, foreground_share=0.33, augmentation="default")
        train["inference"] = {"mode": "sliding_window", "overlap": 0.5, "blend": "gaussian"}
    if args.tiny:
        dataset.update(train_per_site=4, test_per_site=2, **({} if args.profile == "real" else {"native_size": [40, 48]}))
        model = {"base_channels": 4, "depth": 2}
        if strategy["name"] == "relay":
            strategy = deep_merge(strategy, {"kwargs": {"label_generator_channels": 16, "image_generator_channels": 4,
                                                        "discriminator_channels": 4, "quality_samples": 2}})
    return vessel_study(seed, dataset, model, strategy, train)


def run(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """Train ``variant`` at ``seed``, or read back the numbers of its finished run
    (``result.json`` beside its config, written atomically once the run ends)."""
    folder = args.out / f"{variant}_seed{seed}"

    def train(path: Path) -> dict[str, Any]:
        runner = TimedRun(load_config(path), folder / "run", gpus=args.gpus)
        summary = runner.execute()["dice"]
        quality = runner.result_path("replay_quality.json")
        counted = runner.result_path("replay_weights.json")
        return {
            "final_mean": summary["final_mean"],
            "backward_transfer": summary["backward_transfer"],
            "seconds_per_epoch": runner.fit_seconds / runner.fit_epochs if runner.fit_epochs else None,
            "replay_quality": json.loads(quality.read_text()) if quality.is_file() else {},
            "replay_weights": json.loads(counted.read_text()) if counted.is_file() else {},
        }

    return cached_run(folder, study(args, variant, seed), train)


def report(args: argparse.Namespace, results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The markdown of the results: a table over variants, then relay's replay quality."""
    lines = [
        f"Machine: {machine()}; devices: {'GPU ' + ','.join(map(str, args.gpus)) if args.gpus else 'CPU'}. Three synthetic vessel sites "
        f"({', '.join(SITES)}), {'as the releases look at native size' if args.profile == 'real' else f'{args.img_size}x{args.img_size}'}, {args.epochs} epochs of {args.num_replica} passes per site, batch "
        f"{args.batch_size}{f', site shift {args.site_shift}' if args.site_shift else ''}"
        f"{f', {args.patch_size}x{args.patch_size} augmented patches, sliding-window tests' if args.patch_size else ''}, U-Net width {args.base_channels}, seeds "
        f"{', '.join(map(str, args.seeds))}; relay replays {args.replay_size}x{args.replay_size} patches. Mean ± sd over seeds.",
        "",
        "| variant | final mean Dice | backward transfer | s / epoch |",
        "|---|---|---|---|",
    ]
    for variant, by_seed in results.items():
        rows = list(by_seed.values())
        lines.append(
            f"| {variant} | {spread([r['final_mean'] for r in rows])} | {spread([r['backward_transfer'] for r in rows])} "
            f"| {spread([r['seconds_per_epoch'] for r in rows])} |"
        )
    for variant, by_seed in results.items():
        stages = list(dict.fromkeys((stage, site) for r in by_seed.values() for stage, sites in r["replay_quality"].items() for site in sites))
        if not stages:
            continue
        lines += ["", f"Replay quality of {variant} (before a site, of an earlier site): replay, real in parentheses.", "",
                  "| before | of | " + " | ".join(QUALITY) + " |", "|---|---|" + "---|" * len(QUALITY)]
        for stage, site in stages:
            cells = []
            for name in QUALITY:
                measured = [r["replay_quality"][stage][site] for r in by_seed.values() if site in r["replay_quality"].get(stage, {})]
                cells.append(f"{spread([m[name + '_replay'] for m in measured])} ({spread([m[name + '_real'] for m in measured])})")
            lines.append(f"| {stage} | {site} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["sequential", "relay", "relay_no_merge"])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-replica", type=int, default=10, help="passes over a site's images per epoch (GANs need the steps)")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--replay-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=None, help="train on patches of this side (default: whole images)")
    parser.add_argument("--site-shift", type=float, default=0.0,
                        help="how much the sites' vessels differ (0 to 1: the first site's thinner and fainter, the last's wider and stronger)")
    parser.add_argument("--profile", choices=["hard", "real"], default="hard",
                        help="'hard': small eyes read at --img-size with thin faint vessels; 'real': every site as its release "
                             "looks, at native size (565 to 999 pixels) with vessels 1-13 px wide (needs --patch-size, no --site-shift)")
    parser.add_argument("--train-per-site", type=int, default=None, help="training images per site (default: the generator's)")
    parser.add_argument("--test-per-site", type=int, default=None, help="test images per site (default: the generator's)")
    parser.add_argument("--base-channels", type=int, default=32, help="the U-Net's width")
    parser.add_argument("--gpus", type=int, nargs="*", default=None, help="GPU indices (default: the CPU)")
    parser.add_argument("--out", type=Path, default=Path("exps/benchmark_relay"))
    parser.add_argument("--tiny", action="store_true", help="a few seconds per run, to check that the script works")
    parser.add_argument("--write", type=Path, default=None, help="update this report's relay section")
    args = parser.parse_args()
    if args.profile == "real" and (args.patch_size is None or args.site_shift):
        parser.error("--profile real reads native-size images: give --patch-size, and no --site-shift (the sites differ as the releases do)")
    if args.tiny:
        args.img_size, args.replay_size, args.num_replica = 32, 16, 1
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            result = run(args, variant, seed)
            results.setdefault(variant, {})[seed] = result
            print(f"{variant} seed {seed}: final mean Dice {spread([result['final_mean']])}, backward transfer "
                  f"{spread([result['backward_transfer']])}, {spread([result['seconds_per_epoch']])} s/epoch", flush=True)
    text = report(args, results)
    print("\n" + text)
    if args.write is not None:
        write_section(args.write, "relay", "## Relay against sequential (`benchmarks/relay.py`)\n\n" + text)


if __name__ == "__main__":
    main()
