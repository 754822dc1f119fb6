"""A plain (non-editable) install works from any folder: the configs ship as package data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_trains_a_shipped_config_from_any_folder(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SITEFLOW_BUILD_CUDA": "0"}
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
        env=env, capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("siteflow-*.whl")
    target = tmp_path / "installed"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        env=env, capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert (target / "siteflow" / "configs" / "demo" / "sequential.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"  # no configs/ folder here, no source tree on the path
    elsewhere.mkdir()
    run_env = {**env, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import siteflow, siteflow.kernels as k; print(siteflow.__file__, k.backend())"],
                           env=run_env, cwd=elsewhere, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr[-3000:]
    assert where.stdout.startswith(str(target)) and where.stdout.split()[-1] == "compiled"

    train = subprocess.run(
        [sys.executable, "-c", "import sys; from siteflow.cli import train_main; sys.exit(train_main())",
         "-c", "demo/sequential", "-n", "x"],
        env=run_env, cwd=elsewhere, capture_output=True, text=True,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    summary = json.loads((elsewhere / "exps" / "demo" / "sequential" / "x" / "results" / "summary.json").read_text())
    assert summary["stages"] == ["site1", "site2", "site3"]
    assert 0.0 < summary["dice"]["final_mean"] <= 1.0
