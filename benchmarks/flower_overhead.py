"""The cost of a deployed round beyond the sites' training: the same rounds simulated and on
Flower (a real SuperLink and one SuperNode per site on 127.0.0.1, started as the tests start
them), with and without the site workers that keep the training stack imported.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/flower_overhead.py --config demo/fedavg --rounds 2

Modes (``--modes``, comma-separated):

- ``simulated``: ``train.py`` of the config, one process (what a user waits for, imports included);
- ``deployed``: ``flwr run --stream`` on the federation as the README starts it: every train and
  evaluate message runs in a fresh ``flwr-clientapp`` process that imports torch and Lightning;
- ``worker``: the same with a site worker per SuperNode (``worker=`` in the node config).
- ``secagg``: ``worker`` with SecAgg+ (``secure-aggregation=true`` in the run config).

For each mode: the wall time of the run (from ``flwr run`` until it returns; the SuperLink,
SuperNodes and workers are started and ready before), and the overhead per round, (mode -
simulated) / rounds; the deployed runs' final mean Dice is printed next to the simulated one.
Every process started is killed at the end (``tests/flower_local.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the local federation of the tests

from flower_local import APP, LocalFederation

from siteflow.config import resolve_config_path

MODES = ("simulated", "deployed", "worker", "secagg")


def config_copy(config: str, rounds: int, folder: Path) -> Path:
    """The config with ``rounds`` rounds and absolute data paths, as ``folder/<name>.yaml``."""
    path, name = resolve_config_path(config)
    raw = yaml.safe_load(path.read_text())
    raw["common"]["strategy"]["kwargs"]["rounds"] = rounds
    dataset = raw["common"]["dataset"]["kwargs"]
    if "root_path" in dataset:
        dataset["root_path"] = str((ROOT / dataset["root_path"]).resolve())
    copy = folder / f"{name.replace('/', '_')}.yaml"
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    return copy


def final_dice(run_dir: Path) -> float:
    return float(json.loads((run_dir / "results" / "summary.json").read_text())["dice"]["final_mean"])


def simulated(config: Path, folder: Path) -> tuple[float, float]:
    """(seconds, final mean Dice) of ``train.py`` of ``config``."""
    started = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "-c", str(config), "-n", "simulated", "--exps-root", str(folder)],
                   check=True, cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    return seconds, final_dice(folder / config.stem / "simulated")


def deployed(
    config: Path, folder: Path, sites: int, *, workers: bool, secagg: bool = False, superexec_poll: float | None = None
) -> tuple[float, float]:
    """(seconds of ``flwr run``, final mean Dice) on a local federation of ``sites`` SuperNodes
    (their SuperExecs looking for new messages every ``superexec_poll`` seconds, if given)."""
    nodes = [f'task-id={i} exps-root="{folder / f"hospital{i}"}"' for i in range(1, sites + 1)]
    env = {} if superexec_poll is None else {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(superexec_poll)}
    local = LocalFederation(folder, nodes, workers=workers, env=env)
    try:
        run_config = f"config='{config}' note='deployed' exps-root='{folder / 'server'}' wait-for-sites=300"
        if secagg:
            run_config += " secure-aggregation=true"
        started = time.monotonic()
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=3000)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"flwr run failed:\n{result.stdout[-4000:]}\n{local.log_tails()}")
    finally:
        local.close()
    return seconds, final_dice(folder / "server" / config.stem / "deployed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo/fedavg")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="simulated,deployed,worker")
    parser.add_argument("--folder", type=Path, help="where the runs go (default: a new temporary folder)")
    parser.add_argument("--superexec-poll", type=float, default=0.1,
                        help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL of the SuperNodes, as the README starts them "
                        "(Flower's default: 1 s); 0: leave Flower's default")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := [mode for mode in modes if mode not in MODES]:
        parser.error(f"--modes: unknown {unknown} (allowed: {', '.join(MODES)})")
    if "simulated" not in modes:
        parser.error("--modes: the overhead is measured against 'simulated': include it")
    folder = (args.folder or Path(tempfile.mkdtemp(prefix="flower-overhead-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = config_copy(args.config, args.rounds, folder)
    sites = len(yaml.safe_load(config.read_text())["current_tasks"]["task_ids"])
    results: dict[str, tuple[float, float]] = {}
    for mode in modes:
        where = folder / mode
        where.mkdir(exist_ok=True)
        if mode == "simulated":
            results[mode] = simulated(config, where)
        else:
            results[mode] = deployed(config, where, sites, workers=mode != "deployed", secagg=mode == "secagg",
                                     superexec_poll=args.superexec_poll or None)
        print(f"{mode}: {results[mode][0]:.1f} s, final mean dice {results[mode][1]:.4f}", flush=True)
    base = results["simulated"][0]
    print(f"\n{args.config}, {args.rounds} rounds, {sites} sites, SuperExec poll {args.superexec_poll or 'default'} (runs in {folder})")
    print("| mode | wall time (s) | overhead per round (s) | final mean Dice |")
    print("|---|---|---|---|")
    for mode, (seconds, dice) in results.items():
        overhead = "-" if mode == "simulated" else f"{(seconds - base) / args.rounds:.1f}"
        print(f"| {mode} | {seconds:.1f} | {overhead} | {dice:.4f} |")


if __name__ == "__main__":
    main()
