"""What the ServerApp and the ClientApps say to each other: record keys and settings.

A message's content holds up to four records: ``"arrays"`` (the weights, see
:mod:`siteflow.deploy.flower.weights`), ``"config"`` (a ``ConfigRecord``: the round and the
experiment's fingerprint), ``"metrics"`` (a ``MetricRecord``: a site's answer) and, in the
reply to a train message that also asked for a test, ``"tested"`` (its test metrics).
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
TEST_ROUND = "test-round"
"""Config key of a train message: the round whose global model the site tests before it
trains (the global weights it receives are that model's); the test metrics come back in the
reply's ``"tested"`` record. Saves a round its own exchange of evaluate messages."""
TESTED = "tested"
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
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SettingsError(f"{where}: {key} must be of type {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class SecureSettings:
    """Secure aggregation with SecAgg+ (:mod:`siteflow.deploy.flower.secure`), from the run
    config's ``secagg-*`` keys.

    Attributes:
        threshold: the share of a site's neighbours (every other site) whose secret shares
            rebuild its masks, in (0, 1]: a round survives sites dropping out as long as at
            least this share of them (and at least 2) is left.
        clipping_range: each site's weight-scaled update is clipped to [-c, c] (positive).
        quantization_range: ... and rounded to this many levels over it (an integer power
            of 2, below 2**32).
        max_weight: the largest weight a site may have: its training-sample count (1 each
            with ``weighting: equal``); a site with more samples refuses the round.
    """

    threshold: float = 0.5
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    max_weight: float = 1000.0

    def __post_init__(self) -> None:
        where = "run config"
        if not 0 < self.threshold <= 1:
            raise SettingsError(f"{where}: secagg-threshold must be in (0, 1], got {self.threshold}")
        for key, value in (("secagg-clipping-range", self.clipping_range), ("secagg-max-weight", self.max_weight)):
            if not value > 0:
                raise SettingsError(f"{where}: {key} must be positive, got {value}")
        levels = self.quantization_range
        if not (0 < levels < 2**32 and levels & (levels - 1) == 0):
            raise SettingsError(f"{where}: secagg-quantization-range must be a power of 2 below 2**32, got {levels}")

    @classmethod
    def from_run_config(cls, run_config: UserConfig) -> "SecureSettings":
        where = "run config"
        return cls(
            threshold=_value(run_config, "secagg-threshold", float, where, cls.threshold),
            clipping_range=_value(run_config, "secagg-clipping-range", float, where, cls.clipping_range),
            quantization_range=_value(run_config, "secagg-quantization-range", int, where, cls.quantization_range),
            max_weight=_value(run_config, "secagg-max-weight", float, where, cls.max_weight),
        )


@dataclass(frozen=True)
class RunSettings:
    """The run config, shared by the ServerApp and every ClientApp.

    Attributes:
        config: the siteflow config, a name under ``configs/`` or a YAML path.
        note: the run's name: outputs go to ``<exps-root>/<config>/<note>/``.
        exps_root: root of the ServerApp's run folders.
        round_timeout: seconds the server waits for the sites' replies in a round.
        wait_for_sites: seconds the server waits at the start for every site to connect.
        secure: with ``secure-aggregation=true``, the settings of SecAgg+, which then runs
            every round's training; None (the default, ``false``): the sites' updates
            travel in the clear.
    """

    config: str
    note: str = "flower"
    exps_root: Path = Path("exps")
    round_timeout: float = 3600.0
    wait_for_sites: float = 600.0
    secure: SecureSettings | None = None

    @classmethod
    def from_run_config(cls, run_config: UserConfig) -> "RunSettings":
        where = "run config"
        return cls(
            config=_value(run_config, "config", str, where),
            note=_value(run_config, "note", str, where, cls.note),
            exps_root=Path(_value(run_config, "exps-root", str, where, str(cls.exps_root))),
            round_timeout=_value(run_config, "round-timeout", float, where, cls.round_timeout),
            wait_for_sites=_value(run_config, "wait-for-sites", float, where, cls.wait_for_sites),
            secure=_secure_settings(run_config),
        )


def _secure_settings(run_config: UserConfig) -> SecureSettings | None:
    """The SecAgg+ settings (checked) if ``secure-aggregation`` is true, else None."""
    secure = SecureSettings.from_run_config(run_config)
    return secure if _value(run_config, "secure-aggregation", bool, "run config", False) else None


@dataclass(frozen=True)
class NodeSettings:
    """A SuperNode's ``--node-config``: which site it serves, and where.

    Attributes:
        task_id: the site's task id in the config's ``all_tasks_datasets``.
        config: the site's own copy of the config (its data paths), else the run config's.
        exps_root: root of the site's run folders.
        gpu: the GPU index the site trains on; None: the CPU.
        worker: the Unix socket of the site's long-running worker
            (:mod:`siteflow.deploy.flower.worker`) that answers train and evaluate
            messages; None: the ClientApp's own process answers them.
    """

    task_id: int
    config: str | None = None
    exps_root: Path = Path("exps")
    gpu: int | None = None
    worker: Path | None = None

    @classmethod
    def from_node_config(cls, node_config: UserConfig) -> "NodeSettings":
        where = "node config (flower-supernode --node-config)"
        return cls(
            task_id=_value(node_config, TASK_ID, int, where),
            config=_value(node_config, "config", str, where) if "config" in node_config else None,
            exps_root=Path(_value(node_config, "exps-root", str, where, str(cls.exps_root))),
            gpu=_value(node_config, "gpu", int, where) if "gpu" in node_config else None,
            worker=Path(_value(node_config, "worker", str, where)) if "worker" in node_config else None,
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
