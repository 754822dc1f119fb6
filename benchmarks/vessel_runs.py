"""What the vessel benchmarks (relay.py, fedbn.py) share: the three synthetic vessel sites as a
study's config, and runs whose numbers are kept beside their config and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

SITES = ("DRIVE", "STARE", "CHASE_DB1")
"""The sites, named and drawn as the public vessel sets."""


def vessel_study(seed: int, dataset: dict[str, Any], model: dict[str, Any], strategy: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """A config (plain data, as YAML gives it) training a U-Net on :data:`SITES` of
    ``synthetic_vessels`` with these dataset, model, strategy and train options."""
    return {
        "common": {"seed": seed, "num_workers": 0, "dataset": {"name": "synthetic_vessels", "kwargs": dataset},
                   "model": {"name": "unet", "kwargs": model}, "strategy": strategy, "train": train},
        "all_tasks_datasets": [{"task_id": i + 1, "task_name": site, "kwargs": {"folder": site}} for i, site in enumerate(SITES)],
        "current_tasks": {"task_ids": [1, 2, 3]},
    }


def cached_run(folder: Path, config: dict[str, Any], train: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The numbers of the run of ``config`` kept in ``folder``: read back from its
    ``result.json`` when a finished run of this very config is there; else ``config`` is
    written to ``folder/config.yaml``, ``train(that path)`` runs it, and its numbers are
    written (atomically) once it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    numbers = folder / "result.json"
    if numbers.is_file() and path.is_file() and path.read_text() == text:
        return json.loads(numbers.read_text())
    path.write_text(text)
    result = train(path)
    partial = numbers.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=1))
    partial.replace(numbers)
    return result
