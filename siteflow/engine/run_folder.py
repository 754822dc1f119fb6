"""The run folder: its layout, the config it belongs to, progress and saved state.

Layout of ``exps/<config>/<note>/``::

    processed_config.yaml            the merged, validated config
    checkpoints/initial.safetensors  the seeded initial weights shared by every site
    checkpoints/<save dir>/last.ckpt Lightning checkpoint of the latest epoch (for resuming)
    checkpoints/<save dir>/final.safetensors  the stage's final weights
    checkpoints/<name>.safetensors   strategy state (a federation's rounds, ...)
    sites/<site>/                    a site's own files in a simulation (its local weights)
    logs/<stage>/                    TensorBoard and CSV logs
    results/progress.json            the test results of every finished stage, and where the
                                     run is (the stage training now, k of n, time left)
    results/site_matrix_<metric>.csv/.png, results/summary.json
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import yaml
from safetensors import safe_open
from pytorch_lightning.utilities import rank_zero_only

from siteflow.core.atomic import OutputError, load_weights, safe_name, save_weights, write_json, write_text
from siteflow.core.finite import check_finite_weights
from siteflow.core.site_matrix import StageResult
from siteflow.core.types import Tensors, Weights

log = logging.getLogger(__name__)

FINAL_WEIGHTS = "final.safetensors"
INITIAL_WEIGHTS = "initial.safetensors"


class RunFolderConflict(ValueError):
    """The run folder holds the outputs of a different config."""


class RunFolderLocked(RuntimeError):
    """Another process is writing the run folder."""


class RunFolder:
    """The files of one run; reading it back is how a run resumes.

    Args:
        path: the run folder, ``exps/<config>/<note>``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.logs = self.path / "logs"
        self.results_dir = self.path / "results"
        self.results: list[StageResult] = self._read_progress()
        self.position: dict | None = None
        self._stage_weights: dict[str, Path] = {}
        self._stage_own_weights: dict[str, dict[str, Path]] = {}

    # -- the config and the lock -----------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (``.lock``, an advisory ``flock``) while a run writes it: a
        second run on the same folder is refused, not interleaved. The lock goes with the
        process, so a killed run leaves none behind."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+")
        except OSError as error:
            raise OutputError(error.errno, f"cannot write {self.path}: {error.strerror}") from error
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise RunFolderLocked(
                    f"{self.path} is being written by another run (process {holder}): wait for it to end, "
                    "or choose another -n/--note"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self, processed: dict) -> None:
        """Check that the folder holds this config's run (or none) and record the config."""
        path = self.path / "processed_config.yaml"
        if path.is_file():
            previous = yaml.safe_load(path.read_text())
            current = yaml.safe_load(yaml.safe_dump(processed))  # the same round trip as the saved one
            changed = [key for key in _differences(previous, current) if key != "source"]
            if changed:
                raise RunFolderConflict(
                    f"{self.path} holds a run of a different config (changed: {', '.join(changed[:5])}); "
                    "resuming it would mix the two: choose another -n/--note or delete that folder"
                )
        if rank_zero_only.rank == 0:
            write_text(path, yaml.safe_dump(processed, sort_keys=False))

    # -- weights and state -----------------------------------------------------------------

    def stage_dir(self, save_dir: str) -> Path:
        """The checkpoint folder of a stage saved in ``save_dir``."""
        return self.checkpoints / save_dir

    def finished_weights(self, stage: str, save_dir: str) -> Weights | None:
        """The final weights of a stage that finished before (None if it did not); the stage's
        row in the site matrix will name them."""
        final = self.stage_dir(save_dir) / FINAL_WEIGHTS
        self._stage_weights[stage] = final
        return load_weights(final) if final.is_file() else None

    def save_stage_weights(self, save_dir: str, weights: Weights) -> None:
        """Save a trained stage's final weights (``checkpoints/<save_dir>/final.safetensors``);
        weights that are not finite are refused (:class:`~siteflow.core.finite.NonFiniteWeights`)."""
        check_finite_weights(weights, f"{self.stage_dir(save_dir) / FINAL_WEIGHTS}: not written")
        if rank_zero_only.rank == 0:
            save_weights(self.stage_dir(save_dir) / FINAL_WEIGHTS, weights)

    def save_final(self, stage: str, weights: Weights, *, save_dir: str, own_weights: Mapping[str, Weights] | None = None) -> None:
        """Save a stage's final weights as ``checkpoints/<save_dir>/final.safetensors`` and
        each site's own version (``final_<site>.safetensors``) where sites keep some; weights
        that are not finite are refused (:class:`~siteflow.core.finite.NonFiniteWeights`)."""
        directory = self.stage_dir(save_dir)
        own = {site: directory / f"final_{safe_name(site)}.safetensors" for site in own_weights or {}}
        check_finite_weights(weights, f"{directory / FINAL_WEIGHTS}: not written")
        for site, path in own.items():
            check_finite_weights(own_weights[site], f"{path}: not written")
        if rank_zero_only.rank == 0:
            save_weights(directory / FINAL_WEIGHTS, weights)
            for site, path in own.items():
                save_weights(path, own_weights[site])
        self._stage_weights[stage] = directory / FINAL_WEIGHTS
        self._stage_own_weights[stage] = own

    def save_state(self, name: str, tensors: Tensors, info: dict) -> None:
        """Save state atomically as ``checkpoints/<name>.safetensors`` with the JSON ``info``."""
        if rank_zero_only.rank == 0:
            save_weights(self.checkpoints / f"{name}.safetensors", tensors, metadata={"siteflow.state": json.dumps(info)})

    def load_state(self, name: str) -> tuple[Tensors, dict] | None:
        """What :meth:`save_state` saved under ``name``, or None."""
        path = self.checkpoints / f"{name}.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads((handle.metadata() or {}).get("siteflow.state", "{}"))
        return load_weights(path), info

    def site_folder(self, site: str) -> Path:
        """A simulated site's own folder."""
        return self.path / "sites" / safe_name(site)

    # -- the site matrix -------------------------------------------------------------------

    def recorded(self, stage: str) -> bool:
        """Whether the row ``stage`` is in the site matrix."""
        return any(row.stage == stage for row in self.results)

    def record(self, stage: str, values: Mapping[str, Mapping[str, float]], *, trained_site: str | None) -> StageResult | None:
        """Add the row ``stage``, naming the stage's saved weights; a recorded row is kept."""
        if self.recorded(stage):
            return None
        path = self._stage_weights.get(stage)
        own = {site: str(p.relative_to(self.path)) for site, p in self._stage_own_weights.get(stage, {}).items()}
        result = StageResult(
            stage,
            trained_site,
            {site: dict(metrics) for site, metrics in values.items()},
            path and str(path.relative_to(self.path)),
            own or None,
        )
        self.results.append(result)
        self._write_progress()
        return result

    def save_position(self, position: dict) -> None:
        """Record where the run is (see :class:`~siteflow.engine.progress.Position`) in
        ``results/progress.json``, beside the finished stages."""
        self.position = position
        self._write_progress()

    def _write_progress(self) -> None:
        if rank_zero_only.rank == 0:
            progress = {"stages": [dataclasses.asdict(r) for r in self.results], "position": self.position}
            write_json(self.results_dir / "progress.json", progress)

    def stage_weights(self) -> list[tuple[str, Path, dict[str, Path]]]:
        """(stage, final weights file, each site's own weights file) of every finished stage
        with saved weights, in order (for prediction)."""
        return [
            (row.stage, self.path / row.weights, {site: self.path / p for site, p in (row.own_weight_files or {}).items()})
            for row in self.results
            if row.weights
        ]

    def _read_progress(self) -> list[StageResult]:
        path = self.results_dir / "progress.json"
        if not path.is_file():
            return []
        return [StageResult(**_renamed(entry)) for entry in json.loads(path.read_text())["stages"]]


def _renamed(entry: dict) -> dict:
    """A stage of ``progress.json`` with its keys as :class:`StageResult` names them now (run
    folders written before the rename of December 2026 name each site's own final weights
    ``site_weights``), so that such a run resumes."""
    if "site_weights" in entry:
        entry = {**{k: v for k, v in entry.items() if k != "site_weights"}, "own_weight_files": entry["site_weights"]}
    return entry


def _differences(old: object, new: object, path: str = "") -> list[str]:
    """Key paths at which two plain-data trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(old.keys() | new.keys(), key=str) for d in _differences(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [path or "<whole config>"]
