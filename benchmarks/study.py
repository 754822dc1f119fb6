"""The study runner's cost: its overhead per run against launching ``train.py`` and
``predict_test.py`` directly, and the speed-up of 2 parallel workers against one.

    python benchmarks/study.py [--jobs 4] [--epochs 1] [--write BENCHMARKS.md]

Every job is the same tiny run: local training on two synthetic fundus sites of 6 images at
32 x 32 (``tests/experiments.py``'s tiny sites), one epoch, then testing sample by sample,
each job with its own seed. Measured, each from a fresh output folder:

* direct: ``train.py -c CONFIG --seeds K`` then ``predict_test.py`` for one seed, one thread;
* study, 1 worker: ``siteflow-study`` over ``--jobs`` seeds with ``--workers 1`` (one thread
  per job): its wall time per job, against direct;
* study, 2 workers: the same with ``--workers 2`` (one thread each): the speed-up over one
  worker is bounded by the cores left free by other processes (``uptime``'s load, printed);
* the serial part: the 2-worker study run again once all its jobs are done (nothing trains:
  the start, the comparison and the report), which 2 workers cannot shorten.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere
sys.path.insert(0, str(REPO / "tests"))
from benchmarks.report import machine, write_section  # noqa: E402
from experiments import tiny_config  # noqa: E402


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of ``command`` (one thread), which must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs of each study (seeds 0 .. jobs-1)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None, help="write the table into this report (e.g. BENCHMARKS.md)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        config = tiny_config(root, "local", common={"train": {"epochs": args.epochs}})
        loads = [load()]
        direct_dir = root / "direct"
        direct = timed([sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "direct", "--exps-root", str(direct_dir), "--seeds", "0"], root)
        direct += timed([sys.executable, str(REPO / "predict_test.py"), "-c", str(config), "-n", "direct", "--exps-root", str(direct_dir)], root)
        walls = {}
        for workers in (1, 2):
            study = root / f"study{workers}.yaml"
            study.write_text(yaml.safe_dump({
                "name": f"bench{workers}", "output": str(root / f"out{workers}"), "configs": [str(config)],
                "seeds": list(range(args.jobs)), "workers": workers,
            }))
            loads.append(load())
            walls[workers] = timed([sys.executable, str(REPO / "study.py"), str(study)], root)
        serial = timed([sys.executable, str(REPO / "study.py"), str(study)], root)  # all done: the start, analysis and report alone
    per_job = walls[1] / args.jobs
    jobs_speedup = (walls[1] - serial) / (walls[2] - serial)
    text = "\n".join([
        f"A tiny local run (2 synthetic sites of 6 images at 32 x 32, {args.epochs} epoch, then tested sample by sample); "
        f"{machine()}; load before each measurement: {'; '.join(loads)}.",
        "",
        "| how | wall time | per job | against direct |",
        "|---|---|---|---|",
        f"| `train.py --seeds 0` + `predict_test.py` (direct) | {direct:.1f} s | {direct:.1f} s | 1.00x |",
        f"| `siteflow-study`, {args.jobs} jobs, 1 worker | {walls[1]:.1f} s | {per_job:.1f} s | {per_job / direct:.2f}x |",
        f"| `siteflow-study`, {args.jobs} jobs, 2 workers | {walls[2]:.1f} s | {walls[2] / args.jobs:.1f} s | {walls[2] / args.jobs / direct:.2f}x |",
        "",
        f"Speed-up of 2 workers over 1: {walls[1] / walls[2]:.2f}x. What does not run in parallel: the study's "
        f"start, the comparison of the runs and the report, {serial:.1f} s (the same command again once every job "
        f"is done); without it, 2 workers run the jobs {jobs_speedup:.2f}x as fast as one: "
        + ("the serial part is what limits the speed-up at this job size." if jobs_speedup >= 1.9 else
           "the rest goes to the two jobs sharing the 2 cores with whatever else runs (see the load before each measurement).")
        + " A study's job trains and then tests in one process of its own (one start of Python, torch and Lightning where the direct way has two), which is why a job costs less than the direct pair.",
    ])
    print(text)
    if args.write:
        write_section(args.write, "study-runner", "## The study runner\n\n" + text)


if __name__ == "__main__":
    main()
