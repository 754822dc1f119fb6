"""Command lines: ``train.py`` / ``siteflow-train``, ``predict_test.py`` / ``siteflow-predict``,
``compare.py`` / ``siteflow-compare``, ``report.py`` / ``siteflow-report``, ``study.py`` /
``siteflow-study``, ``infer.py`` / ``siteflow-infer`` and ``export.py`` / ``siteflow-export``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from siteflow.config import ConfigError, ExperimentConfig, load_config
from siteflow.config.folders import run_folder
from siteflow.core.console import configure_logging
from siteflow.core.extras import MissingExtra
from siteflow.core.pictures import require_drawing


def _common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "-c", "--config", required=True,
        help="a config under ./configs/ or siteflow's shipped configs, without .yaml (demo/sequential), or a .yaml path",
    )
    parser.add_argument("-n", "--note", default="default", help="name of this run; outputs go to <exps-root>/<config>/<note>/")
    parser.add_argument("-g", "--gpus", default=None, help='GPU indices, e.g. "0" or "0,1" (several: DDP); absent: CPU')
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="show everything on the terminal (libraries' messages and warnings too), at debug level; the log file always has them",
    )
    parser.add_argument("--exps-root", default="exps", type=Path, help="root of all run folders (default: ./exps)")
    return parser


def _gpus(value: str | None, parser: argparse.ArgumentParser) -> list[int] | None:
    if value is None or value.strip() == "":
        return None
    try:
        gpus = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parser.error(f"-g/--gpus: expected GPU indices like 0 or 0,1, got {value!r}")
    import torch

    available = torch.cuda.device_count()
    if any(index < 0 or index >= available for index in gpus):
        seen = f"GPUs 0 to {available - 1}" if available else "no GPU"
        parser.error(f"-g/--gpus {value}: this machine has {seen} that PyTorch can use; leave -g out to run on the CPU")
    return gpus


def _seeds(value: str | None, parser: argparse.ArgumentParser) -> list[int] | None:
    """The ``--seeds`` list: distinct non-negative integers."""
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds: expected distinct non-negative integers like 0,1,2, got {value!r}")
    return seeds


def _spread_text(value: dict | None) -> str:
    """``0.7012 +/- 0.0150 (0.6900, 0.7100, 0.7036)``: a value's mean, std and every seed's."""
    if value is None:
        return "n/a"
    std = "" if value["std"] is None else f" +/- {value['std']:.4f}"
    return f"{value['mean']:.4f}{std} ({', '.join(f'{v:.4f}' for v in value['values'])})"


def _setup(args: argparse.Namespace, parser: argparse.ArgumentParser, program: str) -> tuple[ExperimentConfig, Path]:
    """Load the config (exiting with its error message) and set up logging into the run folder."""
    try:
        config = load_config(args.config, task_ids=[args.task_id] if getattr(args, "task_id", None) is not None else None)
        run_dir = run_folder(args.exps_root, config.name, args.note)
    except (ConfigError, FileNotFoundError, MissingExtra) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    log_file = run_dir / "logs" / f"{program}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.log"
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        configure_logging(log_file, verbose=args.verbose)
    except OSError as error:
        parser.exit(2, f"{parser.prog}: error: cannot write {log_file.parent}: {error.strerror}\n")
    return config, run_dir


def train_main(argv: Sequence[str] | None = None) -> int:
    """Train every current site of a config with its strategy; see README.md."""
    from siteflow.core.site_matrix import matrix_table
    from siteflow.core.atomic import OutputError
    from siteflow.core.finite import NonFiniteWeights
    from siteflow.datasets import DataError
    from siteflow.engine.divergence import TrainingDiverged
    from siteflow.engine.run_folder import RunFolderConflict, RunFolderLocked
    from siteflow.engine.runner import ExperimentRun
    from siteflow.engine.seeds import run_seeds
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
    parser.add_argument(
        "--seeds", default=None,
        help="repeat the study once per seed, e.g. 0,1,2: <run>/seed<k>/ each, mean and spread in <run>/results/",
    )
    args = parser.parse_args(argv)
    gpus = _gpus(args.gpus, parser)
    seeds = _seeds(args.seeds, parser)
    if seeds is not None and (args.handover is not None or args.task_id is not None):
        parser.error("--seeds repeats a whole study; a deployed run (--handover, --task-id) trains one site of one seed")
    config, run_dir = _setup(args, parser, "train")
    if args.handover is not None:
        if not args.handover.is_file():  # a directory, a FIFO or a device would block or fail deep inside
            what = "does not exist" if not args.handover.exists() else "is not a regular file (a directory, a FIFO or a device)"
            parser.error(f"--handover: {str(args.handover)!r} {what}; give the hand-over file received from the previous site")
        if len(config.site_runs) != 1:
            parser.error(f"--handover is for a deployed run of one site; {args.config} trains {len(config.site_runs)}")
        config = config.with_load(args.handover.resolve())
    started = time.perf_counter()
    if args.cpu_processes < 1:
        parser.error(f"--cpu-processes: expected at least 1, got {args.cpu_processes}")
    try:
        options = {"gpus": gpus, "cpu_processes": args.cpu_processes, "key_file": args.key_file}
        if seeds is not None:
            summary = run_seeds(config, run_dir, seeds, **options)
        else:
            run = ExperimentRun(config, run_dir, **options)
            summary = run.execute()
    except (ConfigError, RunFolderConflict, RunFolderLocked, HandoverError, OutputError, SetupRefused, DataError, MissingExtra) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except (TooFewSites, TrainingDiverged, NonFiniteWeights) as error:
        parser.exit(1, f"{parser.prog}: stopped: {error}\n")
    if summary and seeds is not None:
        for metric in summary["metrics"]:
            values = summary[metric]
            print(f"{metric}: final mean {_spread_text(values['final_mean'])}, backward transfer {_spread_text(values['backward_transfer'])}")
        print(f"over seeds {seeds}: results in {run_dir / 'results'} ({time.perf_counter() - started:.0f} s)")
    elif summary:
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
    from siteflow.engine.seeds import seed_folders
    from siteflow.handover import HandoverError

    parser = _common_parser("Sample-wise evaluation of trained weights on every test site.")
    parser.add_argument("-s", "--save-results", action="store_true", help="also write input, prediction and truth as NIfTI")
    parser.add_argument("--weights", type=Path, default=None, help="evaluate this safetensors weights file instead")
    parser.add_argument("--stage", action="append", default=None, help="evaluate only this stage (repeatable)")
    args = parser.parse_args(argv)
    gpus = _gpus(args.gpus, parser)
    config, run_dir = _setup(args, parser, "predict")
    folders = list(seed_folders(run_dir).values()) or [run_dir]  # a study over seeds: every seed's run
    try:
        outputs = [
            predict_run(config, folder, gpu=gpus[0] if gpus else None, save_nifti=args.save_results, weights=args.weights, stages=args.stage)
            for folder in folders
        ]
    except (FileNotFoundError, ValueError, OutputError, HandoverError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except SafetensorError as error:
        parser.exit(2, f"{parser.prog}: error: {args.weights or run_dir}: not a readable safetensors file ({error})\n")
    print("test results in " + ", ".join(map(str, outputs)))
    return 0


def compare_main(argv: Sequence[str] | None = None) -> int:
    """Paired comparison of two runs on the same test images; see README.md."""
    from siteflow.core.atomic import OutputError, write_text
    from siteflow.reporting.compare import COLUMNS, compare_runs, comparison_csv, comparison_rows
    from siteflow.reporting.runs import NoFinishedRun, read_run

    parser = argparse.ArgumentParser(description="Compare two runs' predict_test.py results, site by site (A - B).")
    parser.add_argument("run_a", type=Path, help="run folder exps/<config>/<note> (a study over seeds too)")
    parser.add_argument("run_b", type=Path, help="run folder to compare with")
    parser.add_argument("--model-a", default=None, help="model (stage) of run A (default: the models it ends with: each site's own for a local run, else the last one in its samples.csv)")
    parser.add_argument("--model-b", default=None, help="model (stage) of run B (default: the models it ends with: each site's own for a local run, else the last one in its samples.csv)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write the table as this CSV file")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples: expected at least 1, got {args.resamples}")
    try:
        comparisons = compare_runs(
            read_run(args.run_a), read_run(args.run_b), model_a=args.model_a, model_b=args.model_b, n_resamples=args.resamples
        )
        if args.output is not None:
            write_text(args.output, comparison_csv(comparisons))
    except (NoFinishedRun, ValueError, OutputError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"A = {args.run_a}, B = {args.run_b}")
    print("  ".join(f"{c:>11}" for c in COLUMNS))
    for row in comparison_rows(comparisons):
        print("  ".join(f"{v:>11.4f}" if isinstance(v, float) else f"{v!s:>11}" for v in row))
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """Write one self-contained HTML report of finished runs; see README.md."""
    from siteflow.core.atomic import OutputError
    from siteflow.reporting.report import write_report
    from siteflow.reporting.runs import NoFinishedRun, read_run

    parser = argparse.ArgumentParser(description="One self-contained HTML report of finished runs (the first is compared with the others).")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders exps/<config>/<note>")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="the HTML file (default: ./report.html)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the paired comparisons (default 2000, as siteflow-compare)")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples: expected at least 1, got {args.resamples}")
    try:
        require_drawing("siteflow-report")
        path = write_report([read_run(run) for run in args.runs], args.output, n_resamples=args.resamples)
    except (NoFinishedRun, ValueError, OutputError, MissingExtra) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"report in {path}")
    return 0


def _model_parser(description: str) -> argparse.ArgumentParser:
    """The options that choose a trained model: a run folder (-c, -n, --stage, --site), a
    hand-over file (-c, --handover) or an exported folder (--model)."""
    parser = argparse.ArgumentParser(description=description)
    source = parser.add_argument_group("the model (a run folder, a hand-over file or an exported folder)")
    source.add_argument("-c", "--config", default=None, help="the study's config (demo/sequential or a .yaml path), with -n or --handover")
    source.add_argument("-n", "--note", default="default", help="the run's name: exps/<config>/<note>/ (default: default)")
    source.add_argument("--exps-root", default="exps", type=Path, help="root of all run folders (default: ./exps)")
    source.add_argument("--stage", default=None, help="the run's stage whose model to use (default: the last one)")
    source.add_argument("--site", default=None, help="the site whose own model (local, FedBN, Ditto, FedPer, FFL) and preprocessing to use")
    source.add_argument("--handover", type=Path, default=None, help="a hand-over file, verified as on arrival (with -c)")
    source.add_argument("--key-file", type=Path, default=None, help="consortium key that verifies the hand-over's signature (default: $SITEFLOW_HANDOVER_KEY)")
    source.add_argument("--model", type=Path, default=None, help="a folder written by siteflow-export")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _load_model(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The LoadedModel that the options choose (exits with a clear message on any error)."""
    from siteflow.datasets import DataError
    from siteflow.handover import HandoverError
    from siteflow.handover.keys import load_key
    from siteflow.inference import ModelSourceError, from_export, from_handover, from_run_folder

    configure_logging(verbose=args.verbose)
    if args.model is not None:
        if args.config is not None or args.handover is not None:
            parser.error("--model is a self-contained exported folder: give it without -c or --handover")
    elif args.config is None:
        parser.error("choose the model: -c CONFIG -n NOTE (a run), -c CONFIG --handover FILE, or --model FOLDER")
    try:
        if args.model is not None:
            return from_export(args.model)
        config = load_config(args.config)
        if args.handover is not None:
            return from_handover(config, args.handover, key=load_key(args.key_file), site=args.site)
        return from_run_folder(config, run_folder(args.exps_root, config.name, args.note), stage=args.stage, site=args.site)
    except (ConfigError, FileNotFoundError, ModelSourceError, HandoverError, DataError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def infer_main(argv: Sequence[str] | None = None) -> int:
    """Run a trained model on new, unlabelled images or volumes; see docs/how-to/use-a-trained-model.md."""
    from siteflow.core.atomic import OutputError
    from siteflow.inference import InputError, Predictor, check_output_folder, list_inputs, run_inference

    parser = _model_parser("Run a trained model on new images, volumes or DICOM series (no labels needed).")
    parser.add_argument("inputs", type=Path, nargs="+", help="image or volume files, DICOM series folders, or folders of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the output folder (mirrors the inputs' names)")
    parser.add_argument("--probabilities", action="store_true", help="also write each class's probability map (NIfTI)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    model = _load_model(args, parser)
    try:
        items = list_inputs(args.inputs, model.recipe.spatial_dims)
        check_output_folder(args.output, args.inputs, items, model.recipe)
        predictor = Predictor(model.recipe, model.network, probabilities=args.probabilities)
        report = run_inference(predictor, items, args.output, progress=not args.no_progress)
    except (InputError, OutputError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    done = len(items) - len(report.failures)
    print(f"{done} of {len(items)} inputs predicted by {model.recipe.name} in {report.seconds:.1f} s: {args.output / 'predictions.csv'}")
    for path, reason in report.failures:
        print(f"failed: {path}: {reason}")
    return 1 if report.failures else 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """Export a trained model as a self-contained folder; see docs/how-to/use-a-trained-model.md."""
    from siteflow.core.atomic import OutputError
    from siteflow.export import export_model

    parser = _model_parser("Export a trained model: safetensors, TorchScript, ONNX, a MONAI bundle and a model card.")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the new folder to write")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX graph")
    args = parser.parse_args(argv)
    if args.model is not None:
        parser.error("--model is already an exported folder; export from a run (-c, -n) or a hand-over file (-c, --handover)")
    model = _load_model(args, parser)
    try:
        folder = export_model(model, args.output, onnx=not args.no_onnx)
    except OutputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"exported {model.recipe.name} to {folder}")
    return 0


def study_main(argv: Sequence[str] | None = None) -> int:
    """Run a whole comparison from a study file; see docs/how-to/study.md."""
    from siteflow.core.atomic import OutputError
    from siteflow.study import StudyError, load_study
    from siteflow.study.engines import LocalEngine, RayEngine
    from siteflow.study.runner import dry_run, run_study

    parser = argparse.ArgumentParser(
        description="Train every run of a study over its seeds in parallel, test them, compare them with the reference, write one report."
    )
    parser.add_argument("study", type=Path, help="the study file (see docs/how-to/study.md)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their estimated cost; train nothing")
    parser.add_argument("--workers", type=int, default=None, help="runs at a time (default: the study's workers, else one per GPU, or one per 4 CPU cores)")
    parser.add_argument("--engine", choices=("local", "ray"), default=None, help="local processes (default) or a Ray cluster")
    parser.add_argument("--address", default="auto", help="the Ray cluster with --engine ray (default: auto, the cluster this machine is in)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every library's messages too")
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers: expected at least 1, got {args.workers}")
    try:
        study = load_study(args.study)
        workers = args.workers or study.workers
        engine_name = args.engine or study.engine
        engine = RayEngine(args.address, workers) if engine_name == "ray" else LocalEngine(workers)
        if args.dry_run:
            dry_run(study, engine)
            return 0
        require_drawing("siteflow-study's report")  # before anything trains
        outcome = run_study(study, engine)
    except (StudyError, FileNotFoundError, ConfigError, OutputError, MissingExtra) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if outcome.report is None:
        print(f"no report: the reference {study.reference} did not finish (run the same command again to resume)")
        return 1
    print(f"report in {outcome.report}")
    return 1 if outcome.failed else 0
