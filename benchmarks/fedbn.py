"""FedBN, FedAvg, sequential, local and joint on the proxy of DRIVE, STARE and CHASE_DB1.

    OMP_NUM_THREADS=1 python benchmarks/fedbn.py [--seeds 0 1 2] [--variants fedbn fedavg sequential]
        [--train-per-site 12] [--test-per-site 3] [--rounds 5] [--local-epochs 2] [--write BENCHMARKS.md]

The sites are :func:`siteflow.datasets.generate_vessel_sites` with ``profile: real``: each
site at its release's native size and look, CHASE_DB1 at 999 x 960 with wider vessels on a
darker retina and a large black surround without a field-of-view mask. The budget is the
shipped ``vessels/*`` configs scaled to a CPU, as issue 30 ran them on the real sets: U-Net
width 16, 128 x 128 augmented patches (a third centred on vessels), 8 per image and epoch,
``--rounds`` rounds of ``--local-epochs`` local epochs (sequential, local and joint: as many
epochs per site), AdamW with a cosine schedule over all epochs, tests by Gaussian-weighted
sliding windows over whole images. Variant ``fedbn_running`` is FedBN as it was before
issue 30's fix (``norm_statistics: running``: each site tested with the running statistics its
layers gathered before the server averaged the other weights): it reproduces the failure.
Variants ``fedavg_across`` and ``fedbn_across`` run the cosine schedule once across the rounds
(``schedule: across_rounds``) instead of afresh in every round, as sequential, local and joint
run it over their epochs. For each variant and seed it prints each site's final Dice, the wall time and the
bytes a site sends per round; the run folders stay under ``--out`` with each run's numbers
(``result.json``): a second call reads finished runs back instead of training them again.
``--tiny`` shrinks everything to check that the script runs (meaningless numbers).
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
from siteflow.config import load_config  # noqa: E402
from siteflow.engine.runner import ExperimentRun  # noqa: E402

FEDERATED = {"weighting": "samples"}
VARIANTS: dict[str, dict[str, Any]] = {
    "fedavg": {"name": "fedavg", "kwargs": FEDERATED},
    "fedbn": {"name": "fedavg", "kwargs": {**FEDERATED, "keep_local_norm": True}},
    "fedbn_running": {"name": "fedavg", "kwargs": {**FEDERATED, "keep_local_norm": True, "norm_statistics": "running"}},
    "fedavg_across": {"name": "fedavg", "kwargs": {**FEDERATED, "schedule": "across_rounds"}},
    "fedbn_across": {"name": "fedavg", "kwargs": {**FEDERATED, "keep_local_norm": True, "schedule": "across_rounds"}},
    "sequential": {"name": "sequential"},
    "local": {"name": "local"},
    "joint": {"name": "joint"},
}
spread = functools.partial(mean_sd, plus_minus="±")


class TimedRun(ExperimentRun):
    """An experiment run that adds up the wall time of its training steps."""

    fit_seconds = 0.0

    def fit(self, stage, site_runs, start, trainee, *, save_dir, epochs=None, seed_offset=0):
        began = time.perf_counter()
        weights = super().fit(stage, site_runs, start, trainee, save_dir=save_dir, epochs=epochs, seed_offset=seed_offset)
        self.fit_seconds += time.perf_counter() - began
        return weights


def study(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """The config of ``variant`` at ``seed`` (plain data, as YAML would give it)."""
    strategy = json.loads(json.dumps(VARIANTS[variant]))
    federated = "rounds" in json.dumps(strategy) or strategy["name"] == "fedavg"
    epochs = args.rounds * args.local_epochs
    if federated:
        strategy["kwargs"].update(rounds=args.rounds, local_epochs=args.local_epochs)
    dataset = {"profile": "real", "root_path": str(args.out / "data"), "train_per_site": args.train_per_site,
               "test_per_site": args.test_per_site, "patch_size": [args.patch_size] * 2, "foreground_share": 0.33,
               "augmentation": args.augmentation, "fov_ignore_index": 255, "val_fraction": 0.1, "num_replica": args.num_replica}
    model = {"base_channels": args.base_channels, "depth": 4}
    train: dict[str, Any] = {
        "epochs": epochs, "batch_size": 8, "precision": "32-true", "loss": {"name": "dice_ce", "kwargs": {"ignore_index": 255}},
        "optimizer": {"name": "AdamW", "kwargs": {"lr": 1e-3, "weight_decay": 1e-4}},
        "scheduler": {"name": "CosineAnnealingLR", "kwargs": {"T_max": epochs}},
        "val_every_n_epochs": epochs, "inference": {"mode": "sliding_window", "overlap": 0.5, "blend": "gaussian", "sw_batch_size": 4},
    }
    if args.tiny:
        model = {"base_channels": 4, "depth": 2}
    return vessel_study(seed, dataset, model, strategy, train)


def run(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """Train ``variant`` at ``seed``, or read back the numbers of its finished run
    (``result.json`` beside its config, written atomically once the run ends)."""
    folder = args.out / f"{variant}_seed{seed}"

    def train(path: Path) -> dict[str, Any]:
        began = time.perf_counter()
        runner = TimedRun(load_config(path), folder / "run")
        summary = runner.execute()["dice"]
        matrix = (runner.result_path("site_matrix_dice.csv")).read_text().splitlines()
        rounds = args.rounds if VARIANTS[variant]["name"] == "fedavg" else 1
        return {
            "final_per_site": summary["final_per_site"],
            "final_mean": summary["final_mean"],
            "site_matrix": matrix,
            "train_seconds": runner.fit_seconds,
            "wall_seconds": time.perf_counter() - began,
            "seconds_per_round": (time.perf_counter() - began) / rounds,
            "bytes_per_round": sent_bytes(runner) if VARIANTS[variant]["name"] == "fedavg" else None,
        }

    return cached_run(folder, study(args, variant, seed), train)


def sent_bytes(runner: ExperimentRun) -> int:
    """The bytes one site sends per round: the shared weights (float32), those it keeps excluded."""
    strategy = runner.strategy
    network = strategy.build_network(runner.task)
    kept = strategy.local_keys(runner.task)
    return sum(t.numel() * t.element_size() for name, t in network.state_dict().items() if name not in kept)


def report(args: argparse.Namespace, results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The markdown table of the results: each site's final Dice, their mean, the cost per round."""
    lines = [
        f"Machine: {machine()}. Proxy sites `synthetic_vessels` with `profile: real` ({', '.join(SITES)} at native size), "
        f"{args.train_per_site} training and {args.test_per_site} test images per site, U-Net width {args.base_channels}, "
        f"{args.patch_size}x{args.patch_size} patches ({args.augmentation} augmentation), {args.num_replica} per image and epoch, {args.rounds} rounds of "
        f"{args.local_epochs} local epochs ({args.rounds * args.local_epochs} epochs per site for the others), AdamW 1e-3 with a cosine "
        f"schedule, sliding-window tests; seeds {', '.join(map(str, args.seeds))}, mean ± sd. Wall seconds per round "
        f"(per run: a round of the federated runs, the whole run of the others) are given seed by seed: runs made at "
        f"different loads of the machine are not averaged.",
        "",
        "| variant | " + " | ".join(SITES) + " | mean | s / round | bytes sent / site / round |",
        "|---|" + "---|" * (len(SITES) + 3),
    ]
    for variant, by_seed in results.items():
        rows = list(by_seed.values())
        cells = [spread([r["final_per_site"].get(site) for r in rows]) for site in SITES]
        sent = rows[0]["bytes_per_round"]
        seconds = ", ".join(f"{r['seconds_per_round']:.0f}" for r in rows)
        lines.append(
            f"| {variant} | " + " | ".join(cells) + f" | {spread([r['final_mean'] for r in rows])} "
            f"| {seconds} | {'-' if sent is None else f'{sent / 1e6:.2f} MB'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["fedbn", "fedavg", "sequential"])
    parser.add_argument("--train-per-site", type=int, default=12)
    parser.add_argument("--test-per-site", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--num-replica", type=int, default=8, help="patches per training image and epoch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16, help="the U-Net's width")
    parser.add_argument("--augmentation", default="default", help="the augmentation preset of the training patches")
    parser.add_argument("--out", type=Path, default=Path("exps/benchmark_fedbn"))
    parser.add_argument("--tiny", action="store_true", help="a tiny network and one round, to check that the script works")
    parser.add_argument("--write", type=Path, default=None, help="update this report's fedbn section")
    args = parser.parse_args()
    if args.tiny:
        args.rounds, args.local_epochs, args.num_replica, args.train_per_site, args.test_per_site = 1, 1, 1, 2, 1
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            result = run(args, variant, seed)
            results.setdefault(variant, {})[seed] = result
            per_site = ", ".join(f"{site} {value:.3f}" for site, value in result["final_per_site"].items())
            print(f"{variant} seed {seed}: {per_site}; {result['seconds_per_round']:.0f} s/round", flush=True)
    text = report(args, results)
    print("\n" + text)
    if args.write is not None:
        write_section(args.write, "fedbn", "## FedBN on the proxy of the real vessel sets (`benchmarks/fedbn.py`)\n\n" + text)


if __name__ == "__main__":
    main()
