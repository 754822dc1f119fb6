"""What a run prints: its own progress and the warnings that ask the user to act; the libraries'
chatter only with -v, and always in the log file."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import tiny_config
from siteflow.core.console import OWN_CODE, ConsoleFilter, warning_source

ROOT = Path(__file__).resolve().parent.parent


def _record(name: str, level: int, message: str = "text", args: tuple = ()) -> logging.LogRecord:
    return logging.LogRecord(name, level, "file.py", 1, message, args, None)


def test_the_filter_passes_siteflow_and_errors_and_holds_back_library_info():
    keep = ConsoleFilter()
    assert keep.filter(_record("siteflow.engine.runner", logging.INFO))
    assert keep.filter(_record("siteflow", logging.WARNING))
    assert not keep.filter(_record("pytorch_lightning.utilities.rank_zero", logging.INFO, "GPU available: False"))
    assert not keep.filter(_record("siteflowish", logging.INFO))  # a prefix is not the package
    assert keep.filter(_record("pytorch_lightning.trainer", logging.ERROR))


def test_a_warning_is_shown_when_siteflows_code_raised_it():
    own = f"{OWN_CODE}/kernels/ops.py:38: UserWarning: using the reference kernels\n"
    library = "/venv/lib/python3.11/site-packages/pytorch_lightning/x.py:21: DeprecationWarning: old\n"
    assert warning_source(_record("py.warnings", logging.WARNING, "%s", (own,))) == f"{OWN_CODE}/kernels/ops.py"
    keep = ConsoleFilter()
    assert keep.filter(_record("py.warnings", logging.WARNING, "%s", (own,)))
    assert not keep.filter(_record("py.warnings", logging.WARNING, "%s", (library,)))


def _train(config: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "train.py"), "-c", str(config), "-n", "quiet", "--exps-root", str(tmp_path / "exps"), *extra]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_a_run_prints_its_progress_and_matrix_and_keeps_the_library_chatter_for_the_log(tmp_path):
    config = tiny_config(tmp_path, sites=2)
    quiet = _train(config, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    terminal = quiet.stdout + quiet.stderr
    assert "[stage 1/2 site1]" in terminal and "site matrix of dice" in terminal
    for noise in ("GPU available", "TPU available", "Tip:", "DeprecationWarning", "LeafSpec", "logging interval"):
        assert noise not in terminal, noise
    (log,) = (tmp_path / "exps" / config.stem / "quiet" / "logs").glob("train_*.log")
    assert "GPU available" in log.read_text()  # nothing is lost: the log has it


@pytest.mark.slow
def test_verbose_shows_the_libraries_messages_too(tmp_path):
    config = tiny_config(tmp_path, sites=2)
    verbose = _train(config, tmp_path, "-v")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "GPU available" in verbose.stderr and "DEBUG" in verbose.stderr
