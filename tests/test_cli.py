"""train.py and predict_test.py as a user runs them: real processes, real files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from experiments import kill_once_written, tiny_config
from siteflow.config import load_config
from siteflow.datasets.pooling import build_dataset

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(script: str, config: Path, exps: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / script), "-c", str(config), "-n", "t", "--exps-root", str(exps), *extra]


@pytest.mark.slow
def test_a_config_mistake_is_one_clear_error_before_any_training(tmp_path):
    config = tiny_config(tmp_path, common={"train": {"epochs": "ten"}})
    result = subprocess.run(command("train.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{config}: common.train.epochs: expected an integer, got 'ten'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "data was generated before the config was validated"


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    epochs = 40
    config = tiny_config(
        tmp_path, current_tasks={"task_ids": [1, 2], "task_confs": {2: {"train": {"epochs": epochs}}}}
    )
    run_dir = tmp_path / "exps" / "sequential" / "t"
    last = run_dir / "checkpoints" / "task_2" / "last.ckpt"
    kill_once_written(command("train.py", config, tmp_path / "exps"), last, cwd=tmp_path, env=ENV)
    interrupted_epoch = torch.load(last, weights_only=True)["epoch"]
    assert interrupted_epoch < epochs - 1, "the run finished before it could be interrupted"
    first_site = (run_dir / "checkpoints" / "task_1" / "final.safetensors").read_bytes()
    progress = json.loads((run_dir / "results" / "progress.json").read_text())
    assert [s["stage"] for s in progress["stages"]] == ["site1"]

    result = subprocess.run(command("train.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage site1: finished before" in result.stderr
    assert f"stage site2: resuming from {last}" in result.stderr
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == epochs - 1 and resumed["global_step"] == epochs  # 4 samples, batch 4: a step an epoch
    assert (run_dir / "checkpoints" / "task_1" / "final.safetensors").read_bytes() == first_site
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["stages"] == ["site1", "site2"]
    assert "final mean" in result.stdout


@pytest.mark.slow
def test_predict_writes_sample_wise_results_that_agree_with_training(tmp_path):
    config_path = tiny_config(tmp_path)
    exps = tmp_path / "exps"
    subprocess.run(command("train.py", config_path, exps), check=True, capture_output=True, env=ENV, cwd=tmp_path)
    result = subprocess.run(command("predict_test.py", config_path, exps, "-s"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = exps / "sequential" / "t" / "test_results"

    with open(output / "samples.csv") as handle:
        samples = list(csv.DictReader(handle))
    assert len(samples) == 2 * 2 * 3  # models (one per finished site) x test sites x images
    assert list(samples[0]) == ["model", "site", "image_id"] + [
        f"{metric}_{name}"
        for metric in ("dice", "hd95", "asd", "iou", "sensitivity", "specificity")
        for name in ("disc_rim", "optic_cup", "mean")
    ]
    # the sample-wise Dice of the final model agrees with the site matrix written by training
    progress = json.loads((exps / "sequential" / "t" / "results" / "progress.json").read_text())
    for site in ("site1", "site2"):
        values = [float(r["dice_mean"]) for r in samples if r["model"] == "site2" and r["site"] == site]
        assert np.mean(values) == pytest.approx(progress["stages"][-1]["values"][site]["dice_sample"], abs=1e-5)

    with open(output / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 4 and summary[0]["n"] == "3"
    low, mean, high, boot_low, boot_high = (
        float(summary[0][f"dice_mean_{k}"]) for k in ("ci_low", "mean", "ci_high", "boot_low", "boot_high")
    )
    assert low <= mean <= high and boot_low <= mean <= boot_high

    assert (output / "overlays" / "site2" / "site1.png").stat().st_size > 1000
    config = load_config(config_path)
    dataset = build_dataset(config.sites[0], "test")
    item = dataset[0]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(output / "nifti" / "site2" / "site1" / f"{item['id']}_label.nii.gz")))
    assert np.array_equal(label, item["label"].numpy())
    image = sitk.ReadImage(str(output / "nifti" / "site2" / "site1" / f"{item['id']}_image.nii.gz"))
    assert image.GetNumberOfComponentsPerPixel() == 3
    native_image = torch.nn.functional.interpolate(item["image"][None], size=item["label"].shape, mode="bilinear", align_corners=False)
    assert np.allclose(sitk.GetArrayFromImage(image), native_image[0].permute(1, 2, 0).numpy())  # at the label's size


@pytest.mark.slow
def test_predict_without_a_trained_run_says_what_to_do(tmp_path):
    config = tiny_config(tmp_path)
    result = subprocess.run(command("predict_test.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert "no trained weights in" in result.stderr and "train first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_missing_key_file_and_an_unreadable_weights_file_are_clear_errors(tmp_path):
    config = tiny_config(tmp_path)
    missing = tmp_path / "no-such.key"
    result = subprocess.run([*command("train.py", config, tmp_path / "exps"), "--key-file", str(missing)], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{missing}: cannot read the key file: No such file or directory" in result.stderr and "Traceback" not in result.stderr
    garbage = tmp_path / "weights.safetensors"
    garbage.write_bytes(b"not safetensors")
    result = subprocess.run([*command("predict_test.py", config, tmp_path / "exps"), "--weights", str(garbage)], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{garbage}: not a readable safetensors file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_deployed_site_refuses_a_tampered_hand_over_before_training(tmp_path):
    config = tiny_config(tmp_path)
    exps = tmp_path / "exps"
    first = subprocess.run(command("train.py", config, exps, "--task-id", "1"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    handover = exps / "sequential" / "t" / "checkpoints" / "task_1" / "handover.safetensors"
    data = bytearray(handover.read_bytes())
    data[-10] ^= 0x01  # one flipped bit in the weights
    received = tmp_path / "received.safetensors"
    received.write_bytes(bytes(data))
    second = subprocess.run(
        [*command("train.py", config, tmp_path / "site2"), "--task-id", "2", "--handover", str(received)],
        capture_output=True, text=True, env=ENV, cwd=tmp_path,
    )
    assert second.returncode == 2
    assert f"{received}: the weights do not match the manifest's SHA-256 digest" in second.stderr
    assert "Traceback" not in second.stderr
    assert not list((tmp_path / "site2").rglob("last.ckpt")), "training started from a tampered file"


@pytest.mark.slow
def test_a_second_run_on_a_locked_folder_and_an_unwritable_folder_are_clear_errors(tmp_path):
    from siteflow.engine.run_folder import RunFolder

    config = tiny_config(tmp_path)
    run_dir = tmp_path / "exps" / "sequential" / "t"
    with RunFolder(run_dir).locked():  # as a first train.py would hold it
        result = subprocess.run(command("train.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{run_dir} is being written by another run (process {os.getpid()})" in result.stderr
    assert "Traceback" not in result.stderr and not (run_dir / "checkpoints").exists()

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the run folders should go")
    result = subprocess.run(command("train.py", config, blocked), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot write {blocked / 'sequential' / 't' / 'logs'}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_corrupt_image_at_the_last_site_is_found_before_the_first_site_trains(tmp_path):
    config = tiny_config(tmp_path)
    build_dataset(load_config(config).sites[1], "test")  # writes the synthetic sites
    broken = sorted((tmp_path / "data").glob("*/Domain2/train/image/*"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    result = subprocess.run(command("train.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert str(broken) in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "exps").rglob("*.safetensors")), "a site trained before the data was checked"


def _file_size_limit(limit: int):
    """A ``preexec_fn`` under which no file may grow beyond ``limit`` bytes: writes past it fail
    with EFBIG, as writes to a full disk fail with ENOSPC (signal SIGXFSZ ignored, as a shell's
    ``ulimit -f`` leaves it)."""
    import resource
    import signal

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return limited


@pytest.mark.slow
def test_a_full_disk_stops_the_run_naming_the_file_and_the_same_command_resumes(tmp_path):
    config = tiny_config(tmp_path)
    exps = tmp_path / "exps"
    checkpoints = exps / "sequential" / "t" / "checkpoints"
    subprocess.run(command("train.py", config, exps), check=True, capture_output=True, env=ENV, cwd=tmp_path)
    weights = (checkpoints / "initial.safetensors").stat().st_size
    last = (checkpoints / "task_1" / "last.ckpt").stat().st_size
    assert last > 2 * weights, "the checkpoint (weights and optimiser state) should outgrow the weights alone"
    import shutil

    shutil.rmtree(exps)
    full = subprocess.run(command("train.py", config, exps), capture_output=True, text=True, env=ENV, cwd=tmp_path,
                          preexec_fn=_file_size_limit(2 * weights))
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    assert f"train.py: error: cannot write {checkpoints / 'task_1' / 'last.ckpt'}: File too large" in full.stderr
    assert not list(checkpoints.rglob(".*tmp-*")), "a temporary file was left behind"
    assert not (checkpoints / "task_1" / "last.ckpt").exists()
    resumed = subprocess.run(command("train.py", config, exps), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (checkpoints / "task_2" / "final.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"current_tasks": {"task_ids": [1, 2], "task_confs": {1: {"checkpoint": {"load": "/nonexistent/handover.safetensors"}}}}},
            "current_tasks.task_confs.1.checkpoint.load: hand-over file '/nonexistent/handover.safetensors' does not exist",
        ),
        (
            {"common": {"dataset": {"kwargs": {"train_per_site": 1}}}},
            "site 'site1', val split: SyntheticFundusDataset: the val split is empty: 1 training sample(s) with val_fraction=0.34 "
            "leave none for it; give the site more images or change the dataset option val_fraction",
        ),
        (
            {"common": {"dataset": {"kwargs": {"test_per_site": 0}}}},
            "kwargs.test_per_site: must be at least 1 (every site needs training and test images), got 0",
        ),
    ],
    ids=["missing-load", "val-split-empty", "no-test-images"],
)
def test_what_would_fail_late_is_refused_before_training_naming_the_key(tmp_path, overrides, message):
    config = tiny_config(tmp_path, **overrides)
    result = subprocess.run(command("train.py", config, tmp_path / "exps"), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "exps").rglob("*.ckpt")), "training started"
