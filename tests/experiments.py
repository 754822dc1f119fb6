"""Tiny experiment configs for the end-to-end tests: real data files, real Lightning, seconds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from siteflow.config import deep_merge


def tiny_config(
    folder: Path,
    strategy: str = "sequential",
    *,
    sites: int = 2,
    dataset: dict | None = None,
    model: dict | None = None,
    **overrides,
) -> Path:
    """Write a config over ``sites`` tiny synthetic fundus sites into ``folder``; returns its path.

    ``dataset`` and ``model`` replace the fundus dataset and the U-Net entries; ``overrides``
    are deep-merged over the config's top-level keys (``common=...``, ``current_tasks=...``).
    """
    config = {
        "common": {
            "seed": 1,
            "num_workers": 0,
            "dataset": {
                "name": "synthetic_fundus",
                "kwargs": {
                    "root_path": str(folder / "data"),
                    "num_sites": sites,
                    "train_per_site": 6,
                    "test_per_site": 3,
                    "native_size": [32, 40],
                    "img_size": [32, 32],
                    "val_fraction": 0.34,
                },
            },
            "model": {"name": "unet", "kwargs": {"base_channels": 4, "depth": 2}},
            "strategy": {"name": strategy},
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "loss": {"name": "dice_ce"},
                "optimizer": {"name": "Adam", "kwargs": {"lr": 0.01}},
                "log_every_n_steps": 1,
            },
        },
        "all_tasks_datasets": [
            {"task_id": i, "task_name": f"site{i}", "kwargs": {"folder": f"Domain{i}"}} for i in range(1, sites + 1)
        ],
        "current_tasks": {"task_ids": list(range(1, sites + 1))},
    }
    if dataset is not None:
        config["common"]["dataset"] = dataset
    if model is not None:
        config["common"]["model"] = model
    path = folder / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(config, overrides), sort_keys=False))
    return path


def kill_once_written(command: list[str], path: Path, *, cwd: Path, env: dict[str, str], timeout: float = 240) -> None:
    """Start ``command`` and SIGKILL it (a crash: no clean-up of any kind) as soon as ``path``
    exists (or it ends, or ``timeout`` seconds pass)."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def deploy_site_by_site(config: Path, folder: Path, task_ids: list[int], *, env: dict[str, str]) -> Path:
    """Run the study of ``config`` as a deployed relay: one ``train.py`` process per site, each in
    its own ``folder/hospital<id>``, each receiving the previous site's hand-over file copied
    there (as carried on a disk); returns the last site's hand-over file."""
    repo = Path(__file__).resolve().parent.parent
    received = None
    for task_id in task_ids:
        site = folder / f"hospital{task_id}"
        site.mkdir()
        command = [sys.executable, str(repo / "train.py"), "-c", str(config), "-n", "deployed",
                   "--exps-root", str(site / "exps"), "--task-id", str(task_id)]
        if received is not None:
            carried = site / "received.safetensors"
            carried.write_bytes(received.read_bytes())
            command += ["--handover", str(carried)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=site)
        assert result.returncode == 0, result.stderr[-3000:]
        received = site / "exps" / config.stem / "deployed" / "checkpoints" / f"task_{task_id}" / "handover.safetensors"
    return received


class RecordsUpdates:
    """Mixin for a real federated strategy: keeps every site's update (what ``local_update``
    returned, in order) in ``updates``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.updates = []

    def local_update(self, site, start, round_number, extra_losses=()):
        update = super().local_update(site, start, round_number, extra_losses)
        self.updates.append(update)
        return update


def sample_weighted_mean(updates, name: str) -> torch.Tensor:
    """The mean of the updates' weight ``name`` weighted by their sample counts (float64)."""
    counts = torch.tensor([update.num_samples for update in updates], dtype=torch.float64)
    return sum(c * update.weights[name].double() for c, update in zip(counts, updates)) / counts.sum()
