"""A finished run read back from its folder: one seed's run folder, or the ``seed<k>/``
folders of a study repeated over seeds (see :mod:`siteflow.engine.seeds`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from siteflow.engine.seeds import seed_folders


class NoFinishedRun(FileNotFoundError):
    """A folder holds no finished run (no ``results/summary.json``)."""


@dataclass(frozen=True)
class FinishedRun:
    """What a finished run wrote.

    Attributes:
        path: the run folder given.
        summary: its ``results/summary.json`` (over seeds for a repeated study).
        config: its ``processed_config.yaml`` (the first seed's for a repeated study).
        folders: the run folder of each seed that ``summary`` covers (``{None: path}`` for a
            run of one seed).
    """

    path: Path
    summary: dict
    config: dict
    folders: dict[int | None, Path]

    @property
    def name(self) -> str:
        """``<config>/<note>``: the last two parts of the folder."""
        return "/".join(self.path.resolve().parts[-2:])

    @property
    def repeated(self) -> bool:
        """Whether the run is a study repeated over seeds."""
        return None not in self.folders

    @property
    def own_models(self) -> bool:
        """Whether every test site's final model is its own (a ``local`` study: each site
        trains alone), not the last model the study trained."""
        return (self.config.get("strategy") or {}).get("name") == "local"

    def test_results(self) -> dict[int | None, Path]:
        """Each seed's ``test_results/samples.csv`` written by ``predict_test.py``, where it exists."""
        return {seed: p / "test_results" / "samples.csv" for seed, p in self.folders.items() if (p / "test_results" / "samples.csv").is_file()}


def read_run(path: Path) -> FinishedRun:
    """Read the finished run in ``path``.

    Raises:
        NoFinishedRun: ``path`` holds no ``results/summary.json`` (nor does a seed folder of it).
        ValueError: naming ``summary.json`` or ``processed_config.yaml`` when it does not parse.
    """
    path = Path(path)
    summary_file = path / "results" / "summary.json"
    if not summary_file.is_file():
        raise NoFinishedRun(
            f"{path} holds no finished run (no results/summary.json): train it first with train.py, "
            "or give the folder exps/<config>/<note> of a run that finished"
        )
    summary = _read_file(summary_file, json.loads, json.JSONDecodeError)
    found = seed_folders(path)
    if "seeds" in summary:  # a repeated study: the seeds it summarised, not a leftover seed<k>/ of another --seeds
        found = {seed: folder for seed, folder in found.items() if seed in summary["seeds"]}
    folders: dict[int | None, Path] = dict(found) or {None: path}
    config_file = next((p / "processed_config.yaml" for p in folders.values() if (p / "processed_config.yaml").is_file()), None)
    config = _read_file(config_file, yaml.safe_load, yaml.YAMLError) if config_file is not None else {}
    return FinishedRun(path, summary, config, folders)


def _read_file(path: Path, parse: Callable[[str], Any], error_type: type[Exception]) -> Any:
    """``parse`` of the text of ``path``; ValueError naming the file when it does not parse."""
    try:
        return parse(path.read_text())
    except error_type as error:
        raise ValueError(f"{path}: unreadable, the run did not finish writing it or it was edited ({error})") from None
