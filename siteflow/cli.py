"""Command lines: ``train.py`` / ``siteflow-train`` and ``predict_test.py`` / ``siteflow-predict``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from siteflow.config import ConfigError, ExperimentConfig, load_config


def _common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "-c", "--config", required=True,
        help="a config under ./configs/ or siteflow's shipped configs, without .yaml (demo/sequential), or a .yaml path",
    )
    parser.add_argument("-n", "--note", default="default", help="name of this run; outputs go to <exps-root>/<config>/<note>/")
    parser.add_argument("-g", "--gpus", default=None, help='GPU indices, e.g. "0" or "0,1" (several: DDP); absent: CPU')
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--exps-root", default="exps", type=Path, help="root of all run folders (default: ./exps)")
    return parser


def _gpus(value: str | None, parser: argparse.ArgumentParser) -> list[int] | None:
    if value is None or value.strip() == "":
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parser.error(f"-g/--gpus: expected GPU indices like 0 or 0,1, got {value!r}")


def _setup(args: argparse.Namespace, parser: argparse.ArgumentParser, program: str) -> tuple[ExperimentConfig, Path]:
    """Load the config (exiting with its error message) and set up logging into the run folder."""
    try:
        config = load_config(args.config, task_ids=[args.task_id] if getattr(args, "task_id", None) is not None else None)
    except (ConfigError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    run_dir = args.exps_root / config.name / args.note
    log_file = run_dir / "logs" / f"{program}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
    except OSError as error:
        parser.exit(2, f"{parser.prog}: error: cannot write {log_file.parent}: {error.strerror}\n")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), file_handler],
        force=True,
    )
    return config, run_dir


def train_main(argv: Sequence[str] | None = None) -> int:
    """Train every current site of a config with its strategy; see README.md."""
    from siteflow.core.site_matrix import matrix_table
    from siteflow.core.atomic import OutputError
    from siteflow.datasets import DataError
    from siteflow.engine.run_folder import RunFolderConflict, RunFolderLocked
    from siteflow.engine.runner import ExperimentRun
    from siteflow.handover import HandoverError
    from siteflow.strategies.base import SetupRefused
    from siteflow.strategies.federated import TooFewSites

    parser = _common_parser("Train a multi-site experiment.")
    parser.add_argument(
        "--task-id", type=int, default=None,
        help="deployed run: train only this site (instead of current_tasks.task_ids)",
    )
    parser.add_argument(
        "--handover", type=Path, default=None,
        help="deployed run: the hand-over file received from the previous site (instead of checkpoint.load)",
    )
    parser.add_argument(
        "--cpu-processes", type=int, default=1,
        help="without -g: train every site with this many CPU processes under DDP (gloo), as several GPUs would",
    )
    parser.add_argument(
        "--key-file", type=Path, default=None,
        help="consortium key to sign and verify hand-over files (default: $SITEFLOW_HANDOVER_KEY, if set)",
    )
    args = parser.parse_args(argv)
    gpus = _gpus(args.gpus, parser)
    config, run_dir = _setup(args, parser, "train")
    if args.handover is not None:
        if len(config.tasks) != 1:
            parser.error(f"--handover is for a deployed run of one site; {args.config} trains {len(config.tasks)}")
        config = config.with_load(args.handover.resolve())
    started = time.perf_counter()
    if args.cpu_processes < 1:
        parser.error(f"--cpu-processes: expected at least 1, got {args.cpu_processes}")
    try:
        run = ExperimentRun(config, run_dir, gpus=gpus, cpu_processes=args.cpu_processes, key_file=args.key_file)
        summary = run.execute()
    except (RunFolderConflict, RunFolderLocked, HandoverError, OutputError, SetupRefused, DataError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except TooFewSites as error:
        parser.exit(1, f"{parser.prog}: stopped: {error}\n")
    if summary:
        metric = summary["metrics"][0]
        print(f"\nsite matrix of {metric} (row: after training, column: test site)\n{matrix_table(run.results, summary['sites'], metric)}\n")
        for metric in summary["metrics"]:
            values = summary[metric]
            transfer = values["backward_transfer"]
            print(
                f"{metric}: final mean {values['final_mean']:.4f}"
                + (f", backward transfer {transfer:+.4f}" if transfer is not None else "")
            )
        print(f"results in {run_dir / 'results'} ({time.perf_counter() - started:.0f} s)")
    return 0


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Test trained weights on every site's test split, sample by sample; see README.md."""
    from safetensors import SafetensorError

    from siteflow.core.atomic import OutputError
    from siteflow.engine.predict import predict_run
    from siteflow.handover import HandoverError

    parser = _common_parser("Sample-wise evaluation of trained weights on every test site.")
    parser.add_argument("-s", "--save-results", action="store_true", help="also write input, prediction and truth as NIfTI")
    parser.add_argument("--weights", type=Path, default=None, help="evaluate this safetensors weights file instead")
    parser.add_argument("--stage", action="append", default=None, help="evaluate only this stage (repeatable)")
    args = parser.parse_args(argv)
    gpus = _gpus(args.gpus, parser)
    config, run_dir = _setup(args, parser, "predict")
    try:
        output = predict_run(
            config, run_dir, gpu=gpus[0] if gpus else None, save_nifti=args.save_results, weights=args.weights, stages=args.stage
        )
    except (FileNotFoundError, ValueError, OutputError, HandoverError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except SafetensorError as error:
        parser.exit(2, f"{parser.prog}: error: {args.weights or run_dir}: not a readable safetensors file ({error})\n")
    print(f"test results in {output}")
    return 0
