"""Nothing escapes its folder: run names (the user's, the server's) that would leave the exps
root are refused, a synthetic generator writes only into a folder of its own, and a site
that gives no data location is refused at validation naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import tiny_config
from siteflow.config import ConfigError, load_config
from siteflow.config.folders import run_folder
from siteflow.datasets import DataError
from siteflow.datasets.synthetic.cache import MARKER, ROOT_MARKER, cached_generation, claim_root

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("note", ["../../x", "a/b", "..", ".", "", "a\\b", "x\ny"])
def test_a_run_name_that_is_not_one_folder_is_refused(tmp_path, note):
    with pytest.raises(ConfigError, match="-n/--note: .* is not a run name: give one folder name"):
        run_folder(tmp_path / "exps", "demo/fedavg", note)


def test_run_folders_stay_inside_the_exps_root(tmp_path):
    root = tmp_path / "exps"
    assert run_folder(root, "demo/fedavg", "v0") == root / "demo" / "fedavg" / "v0"
    with pytest.raises(ConfigError, match=r"config: the experiment's name '../../etc' would place the run outside"):
        run_folder(root, "../../etc", "v0")
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "fedavg").symlink_to(tmp_path)  # a link inside the root that leads out of it
    with pytest.raises(ConfigError, match="leads outside the exps root"):
        run_folder(root, "demo/fedavg", "v0")


def test_train_refuses_a_run_name_that_leaves_the_exps_root_and_writes_nothing(tmp_path):
    config = tiny_config(tmp_path, "sequential", sites=1)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "../../x", "--exps-root", str(tmp_path / "exps")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: -n/--note: '../../x' is not a run name" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "exps").exists()


def test_a_server_chosen_run_name_cannot_place_a_site_outside_its_exps_root(tmp_path):
    from siteflow.deploy.flower.protocol import NodeSettings, RunSettings
    from siteflow.deploy.flower.site import DeployedSite

    config = tiny_config(tmp_path, "fedavg", sites=2)
    node = NodeSettings(task_id=1, exps_root=tmp_path / "hospital1")
    with pytest.raises(ConfigError, match=r"run config note \(the server's choice\): '../../../elsewhere' is not a run name"):
        DeployedSite(RunSettings(config=str(config), note="../../../elsewhere"), node)
    assert not (tmp_path / "elsewhere").exists()


def test_a_synthetic_generator_writes_only_into_a_folder_of_its_own(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "patient_001.dcm").write_bytes(b"not ours")
    with pytest.raises(DataError, match=r"root_path '.*archive': not a folder siteflow made for generated data \(it holds \['patient_001.dcm'\]\)"):
        cached_generation(archive, "fundus", {"seed": 0}, lambda folder: (folder / "x").write_text("x"))
    assert sorted(p.name for p in archive.iterdir()) == ["patient_001.dcm"]  # nothing written

    fresh = tmp_path / "new" / "cache"
    made = cached_generation(fresh, "fundus", {"seed": 0}, lambda folder: (folder / "x").write_text("x"))
    assert (fresh / ROOT_MARKER).is_file() and (made / MARKER).is_file() and (made / "x").read_text() == "x"

    old = tmp_path / "old"  # a cache written before roots were marked: only generated sets in it
    (old / "fundus-0123456789ab").mkdir(parents=True)
    (old / "fundus-0123456789ab" / MARKER).write_text("{}")
    claim_root(old)
    assert (old / ROOT_MARKER).is_file()


def test_a_site_without_a_data_location_is_refused_at_validation_naming_the_key(tmp_path):
    sites = [{"task_id": 1, "task_name": "site1", "kwargs": {"folder": "Domain1"}}, {"task_id": 2, "task_name": "site2"}]
    path = tiny_config(tmp_path, "sequential", sites=2, all_tasks_datasets=sites)
    with pytest.raises(ConfigError, match=r"all_tasks_datasets\[1\]\.kwargs\.folder: is missing: the site gives no data location"):
        load_config(path)


@pytest.mark.slow
def test_train_refuses_a_missing_gpu_and_a_handover_that_is_not_a_regular_file_in_one_sentence(tmp_path):
    import torch

    config = tiny_config(tmp_path, "sequential", sites=2, current_tasks={"task_ids": [2]})
    folder, fifo = tmp_path / "a_folder", tmp_path / "a_fifo"
    folder.mkdir()
    os.mkfifo(fifo)
    base = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "exps")]
    cases = [(["--task-id", "2", "--handover", str(path)], f"--handover: {str(path)!r} is not a regular file (a directory, a FIFO or a device); give the hand-over file received from the previous site")
             for path in (folder, fifo)]
    if torch.cuda.device_count() == 0:
        cases.append((["-g", "0"], "-g/--gpus 0: this machine has no GPU that PyTorch can use; leave -g out to run on the CPU"))
    for extra, message in cases:
        result = subprocess.run([*base, *extra], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == f"train.py: error: {message}"


def test_infer_refuses_a_run_name_that_leaves_the_exps_root(tmp_path, capsys):
    from siteflow.cli import infer_main

    with pytest.raises(SystemExit) as exit_:
        infer_main(["-c", "demo/sequential", "-n", "../../x", "--exps-root", str(tmp_path / "exps"), str(tmp_path), "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "-n/--note: '../../x' is not a run name" in capsys.readouterr().err
