"""Many sites at flat memory: peak memory and time per round of a simulated federation against
its number of sites, at a fixed workload per site.

    OMP_NUM_THREADS=1 python benchmarks/many_sites.py [--sites 3 12 48] [--rounds 3]
        [--base-channels 32] [--strategy fedavg] [--cache none] [--write BENCHMARKS.md]

Every federation is FedAvg (``--strategy``) over synthetic fundus sites of 6 training and 3
test images each at 32 x 32 (``tests/experiments.py``'s tiny sites), a U-Net of
``--base-channels`` (depth 3), one local epoch per round, the global model tested on every
site after every round. Each federation runs in a fresh process (``train.py``'s
:class:`~siteflow.engine.runner.ExperimentRun`), which reports its peak resident memory
(``ru_maxrss``) and the time between the records of successive rounds (a round: every site's
local epoch, the average, the test on every site). The first round (which also builds the
model and checks every site's data) is not counted. The decode cache is ``--cache`` (``none``
or ``disk``: a site's images are read when it trains; ``memory`` keeps every site's decoded
images for the whole run, which grows with the sites).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import machine, write_section  # noqa: E402


def federation_config(folder: Path, sites: int, *, strategy: str, rounds: int, base_channels: int, cache: str) -> Path:
    """Write the config of a federation of ``sites`` tiny synthetic sites into ``folder``."""
    config = {
        "common": {
            "seed": 0,
            "num_workers": 0,
            "dataset": {
                "name": "synthetic_fundus",
                "kwargs": {
                    "root_path": str(folder / "data"), "num_sites": sites, "train_per_site": 6, "test_per_site": 3,
                    "native_size": [32, 40], "img_size": [32, 32], "val_fraction": 0.34, "cache": cache,
                },
            },
            "model": {"name": "unet", "kwargs": {"base_channels": base_channels, "depth": 3}},
            "strategy": {"name": strategy, "kwargs": {"rounds": rounds, "local_epochs": 1}},
            "train": {
                "epochs": 1, "batch_size": 4, "loss": {"name": "dice_ce"},
                "optimizer": {"name": "Adam", "kwargs": {"lr": 0.01}}, "log_every_n_steps": 1,
            },
        },
        "all_tasks_datasets": [{"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"Domain{i}"}} for i in range(1, sites + 1)],
        "current_tasks": {"task_ids": list(range(1, sites + 1))},
    }
    path = folder / f"{strategy}_{sites}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class RoundClock(logging.Handler):
    """The time at which each round's test was recorded (the run's ``stage roundN:`` log line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("stage round"):
            self.times.append(time.perf_counter())


def run_federation(config_file: Path, run_dir: Path) -> dict:
    """Run the federation of ``config_file`` in this process; its peak memory and round times."""
    from siteflow.config import load_config
    from siteflow.engine.runner import ExperimentRun

    clock = RoundClock()
    logger = logging.getLogger("siteflow.engine.runner")
    logger.setLevel(logging.INFO)
    logger.addHandler(clock)
    started = time.perf_counter()
    ExperimentRun(load_config(config_file), run_dir).execute()
    rounds = [later - earlier for earlier, later in zip(clock.times, clock.times[1:])]
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "round_s": rounds,
        "first_round_s": clock.times[0] - started,
    }


def measure(sites: int, folder: Path, *, strategy: str, rounds: int, base_channels: int, cache: str) -> dict:
    """Run a federation of ``sites`` sites in a fresh process; its numbers."""
    config = federation_config(folder, sites, strategy=strategy, rounds=rounds, base_channels=base_channels, cache=cache)
    command = [sys.executable, __file__, "--child", str(config), str(folder / f"run_{sites}")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    if result.returncode != 0:
        raise RuntimeError(f"the federation of {sites} sites failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: dict[int, dict], *, base_channels: int, strategy: str, cache: str, load: str) -> str:
    smallest = min(results)
    lines = [
        f"{strategy}, U-Net (base {base_channels}, depth 3), synthetic sites of 6 training and 3 test images at 32 x 32, "
        f"one local epoch per round, tested on every site every round; decode cache `{cache}`; {machine()}; load: {load}.",
        "",
        "| sites | peak memory (MiB) | against the fewest sites | time per round (s) | per site (s) |",
        "|---|---|---|---|---|",
    ]
    for sites, numbers in sorted(results.items()):
        per_round = statistics.median(numbers["round_s"])
        lines.append(
            f"| {sites} | {numbers['peak_rss_mib']:.0f} | {numbers['peak_rss_mib'] / results[smallest]['peak_rss_mib']:.2f}x "
            f"| {per_round:.2f} | {per_round / sites:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 12, 48])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--strategy", default="fedavg")
    parser.add_argument("--cache", choices=("none", "disk", "memory"), default="none")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--write", type=Path, default=None, help="write the table into this report (e.g. BENCHMARKS.md)")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("CONFIG", "RUN_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_federation(*args.child)))
        return
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.out or Path(temporary)
        results = {}
        for sites in args.sites:
            folder = root / f"sites{sites}"
            folder.mkdir(parents=True, exist_ok=True)
            results[sites] = measure(sites, folder, strategy=args.strategy, rounds=args.rounds, base_channels=args.base_channels, cache=args.cache)
            print(f"{sites} sites: {json.dumps(results[sites])}", flush=True)
    text = table(results, base_channels=args.base_channels, strategy=args.strategy, cache=args.cache, load=load)
    print(text)
    if args.write:
        write_section(args.write, "many-sites", "## Many sites\n\n" + text)


if __name__ == "__main__":
    main()
