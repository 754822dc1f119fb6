"""One job of a study: train one run with one seed, then test it sample by sample.

Run as ``python -m siteflow.study.job CONFIG FOLDER --seed K`` by the study's engines (one
process per job, on this machine or on a worker of a cluster). A job that was killed resumes
when started again: finished stages are read back, an interrupted one continues from its
``last.ckpt`` (see :class:`~siteflow.engine.runner.ExperimentRun`). When it has trained and
tested, it writes ``study_job.json`` into the run folder: the study counts the job as done.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from siteflow.config import load_config
from siteflow.core.atomic import write_json
from siteflow.core.console import configure_logging
from siteflow.engine.predict import predict_run
from siteflow.engine.runner import ExperimentRun
from siteflow.study.folder import JOB_RECORD


def run_job(config_file: Path, folder: Path, seed: int, *, gpu: bool = False, worker: str | None = None) -> dict:
    """Train the experiment of ``config_file`` with ``seed`` in the run folder ``folder``,
    test it (``test_results/``), and write its record (``study_job.json``): the seconds spent
    training and testing in this process, and the machine. ``gpu``: on the first visible GPU
    (the engine chooses it through ``CUDA_VISIBLE_DEVICES``), else on the CPU."""
    config = dataclasses.replace(load_config(config_file), seed=seed)
    started = time.perf_counter()
    ExperimentRun(config, folder, gpus=[0] if gpu else None).execute()
    trained = time.perf_counter()
    predict_run(config, folder, gpu=0 if gpu else None)
    record = {
        "state": "done",
        "seed": seed,
        "train_s": round(trained - started, 2),
        "predict_s": round(time.perf_counter() - trained, 2),
        "worker": worker or platform.node(),
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }
    write_json(Path(folder) / JOB_RECORD, record)
    return record


def end_with_parent() -> None:
    """Have Linux end this process when the process that started it (the study, or a Ray
    worker) dies, killed or not, so that no orphan keeps training and holding the run
    folder's lock; nothing elsewhere."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1
"""``prctl``'s option: the signal this process gets when its parent dies."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One job of a study: train one run with one seed, then test it.")
    parser.add_argument("config", type=Path, help="the run's experiment config (a .yaml path)")
    parser.add_argument("folder", type=Path, help="the run folder of this seed")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--gpu", action="store_true", help="train on the first visible GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of this process")
    parser.add_argument("--worker", default=None, help="where it runs, as the engine names it (recorded)")
    args = parser.parse_args(argv)
    end_with_parent()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log_file = args.folder / "logs" / f"study_job_{time.strftime('%Y-%m-%d_%H-%M-%S')}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    configure_logging(log_file)
    run_job(args.config, args.folder, args.seed, gpu=args.gpu, worker=args.worker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
