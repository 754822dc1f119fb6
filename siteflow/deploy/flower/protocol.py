"""What the ServerApp and the ClientApps say to each other: record keys and settings.

A message's content holds up to three records: ``"arrays"`` (the weights, see
:mod:`siteflow.deploy.flower.weights`), ``"config"`` (a ``ConfigRecord``: the round and the
experiment's fingerprint) and ``"metrics"`` (a ``MetricRecord``: a site's answer).
Settings come from Flower's run config (the app's ``[tool.flwr.app.config]`` or
``flwr run --run-config``) and each SuperNode's ``--node-config``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import UserConfig

if TYPE_CHECKING:  # the ClientApp answers queries without importing the training stack
    from siteflow.config import ExperimentConfig

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

ROUND = "server-round"
"""Config key: the federated round a message belongs to (1, 2, ...)."""
FINGERPRINT = "experiment"
"""Config key: the server's :func:`experiment_fingerprint`; a site with another refuses."""
PHASE = "phase"
"""Config key of a train message: ``"round"`` (a round's site step) or ``"finish"`` (the
strategy's finishing step after the last round, answered with test metrics)."""
FINISH = "finish"
TASK_ID = "task-id"
"""Node-config and metric key: the task id of the site a SuperNode serves."""
NUM_EXAMPLES = "num-examples"
"""Metric key: the training-sample count of a site's update (Flower's weighting key)."""


class SettingsError(ValueError):
    """A run-config or node-config value is missing or of the wrong type."""


def _value(source: UserConfig, key: str, kind: type, where: str, default: Any = None) -> Any:
    """``source[key]`` (or ``default``) checked to be of type ``kind`` (an int passes as a float)."""
    value = source.get(key, default)
    if value is None:
        raise SettingsError(f"{where}: {key} is required")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SettingsError(f"{where}: {key} must be of type {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class RunSettings:
    """The run config, shared by the ServerApp and every ClientApp.

    Attributes:
        config: the siteflow config, a name under ``configs/`` or a YAML path.
        note: the run's name: outputs go to ``<exps-root>/<config>/<note>/``.
        exps_root: root of the ServerApp's run folders.
        round_timeout: seconds the server waits for the sites' replies in a round.
        wait_for_sites: seconds the server waits at the start for every site to connect.
    """

    config: str
    note: str = "flower"
    exps_root: Path = Path("exps")
    round_timeout: float = 3600.0
    wait_for_sites: float = 600.0

    @classmethod
    def from_run_config(cls, run_config: UserConfig) -> "RunSettings":
        where = "run config"
        return cls(
            config=_value(run_config, "config", str, where),
            note=_value(run_config, "note", str, where, cls.note),
            exps_root=Path(_value(run_config, "exps-root", str, where, str(cls.exps_root))),
            round_timeout=_value(run_config, "round-timeout", float, where, cls.round_timeout),
            wait_for_sites=_value(run_config, "wait-for-sites", float, where, cls.wait_for_sites),
        )


@dataclass(frozen=True)
class NodeSettings:
    """A SuperNode's ``--node-config``: which site it serves, and where.

    Attributes:
        task_id: the site's task id in the config's ``all_tasks_datasets``.
        config: the site's own copy of the config (its data paths), else the run config's.
        exps_root: root of the site's run folders.
        gpu: the GPU index the site trains on; None: the CPU.
    """

    task_id: int
    config: str | None = None
    exps_root: Path = Path("exps")
    gpu: int | None = None

    @classmethod
    def from_node_config(cls, node_config: UserConfig) -> "NodeSettings":
        where = "node config (flower-supernode --node-config)"
        return cls(
            task_id=_value(node_config, TASK_ID, int, where),
            config=_value(node_config, "config", str, where) if "config" in node_config else None,
            exps_root=Path(_value(node_config, "exps-root", str, where, str(cls.exps_root))),
            gpu=_value(node_config, "gpu", int, where) if "gpu" in node_config else None,
        )


def experiment_fingerprint(config: "ExperimentConfig") -> str:
    """SHA-256 of what every site must agree on: seed, model, strategy and the list of sites."""
    agreed = {
        "seed": config.seed,
        "model": asdict(config.model),
        "strategy": asdict(config.strategy),
        "sites": [[site.task_id, site.task_name] for site in config.sites],
    }
    return hashlib.sha256(json.dumps(agreed, sort_keys=True).encode()).hexdigest()
