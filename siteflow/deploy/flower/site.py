"""A hospital's part of a deployed federation: its own site's training and testing.

The SuperNode's ``task-id`` picks the site: the config is loaded restricted to that task
(``load_config(..., task_ids=[id])``), so only that site's data is read. The site's files go
to its own run folder, ``<exps-root>/<config>/<note>/<site name>/`` (Lightning logs and, under
FedBN, the normalisation weights that never leave the site). A ClientApp runs in a fresh
process for every message: whatever must outlive a message is on that disk.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from siteflow.config import TaskConfig, load_config
from siteflow.deploy.flower.logs import log_to
from siteflow.deploy.flower.protocol import NodeSettings, RunSettings, experiment_fingerprint
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.base import State
from siteflow.strategies.federated.fedavg import FedAvgStrategy, SiteUpdate

log = logging.getLogger(__name__)

LOCAL_FOLDER = "local"
"""Folder under ``checkpoints/`` of the site's own (FedBN) weights, ``round<r>.safetensors``."""


class FederatedSite:
    """One site of a deployed federation: it trains and tests only its own task.

    Args:
        run_settings: the run config (the config name, the run's note).
        node: the SuperNode's node config (task id, the site's own config, exps root, GPU).
    """

    def __init__(self, run_settings: RunSettings, node: NodeSettings) -> None:
        config = load_config(node.config or run_settings.config, task_ids=[node.task_id])
        self.task: TaskConfig = config.tasks[0]
        self.fingerprint = experiment_fingerprint(config)
        run_dir = node.exps_root / config.name / run_settings.note / self.task.task_name
        log_to(run_dir / "logs" / "flower_site.log")  # one file: every message is a new process
        self.run = ExperimentRun(config, run_dir, gpus=None if node.gpu is None else [node.gpu])
        if not isinstance(self.run.strategy, FedAvgStrategy):
            raise ValueError(f"{config.source}: strategy {config.strategy.name!r} is not federated (fedavg, fedprox)")
        self.strategy: FedAvgStrategy = self.run.strategy
        self.run.prepare()
        self.local_keys = self.strategy.local_keys(self.run)

    @property
    def name(self) -> str:
        """The site's name (``task_name``)."""
        return self.task.task_name

    def check(self, fingerprint: str) -> None:
        """Refuse a server whose config differs in seed, model, strategy or the list of sites."""
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"site {self.name}: the server's config differs from this site's in seed, model, strategy "
                "or the list of sites; both must describe the same experiment"
            )

    def train(self, global_weights: State, round_number: int) -> SiteUpdate:
        """Train the site for round ``round_number`` from the global weights (with its own
        local weights over them); the update holds only the weights that are shared."""
        with self._logged(round_number, "training"):
            start = self.strategy.site_start(global_weights, self._local_weights(before=round_number))
            update = self.strategy.local_update(self.run, self.task, start, round_number)
            if self.local_keys:
                self._keep_local({k: v for k, v in update.weights.items() if k in self.local_keys}, round_number)
        log.info("round %d: site %s trained on %d samples", round_number, self.name, update.num_samples)
        shared = {name: tensor for name, tensor in update.weights.items() if name not in self.local_keys}
        return SiteUpdate(update.site, shared, update.num_samples)

    def test(self, global_weights: State, round_number: int) -> dict[str, float]:
        """The metrics of the global model of round ``round_number`` (with the site's own
        local weights) on the site's own test split."""
        with self._logged(round_number, "testing"):
            weights = self.strategy.site_start(global_weights, self._local_weights(before=round_number + 1))
            values = self.run.evaluate(weights, sites=[self.name])[self.name]
        metric = self.run.matrix_metrics[0]
        log.info("round %d: site %s tested: %s %.4f", round_number, self.name, metric, values[metric])
        return values

    @contextmanager
    def _logged(self, round_number: int, what: str) -> Iterator[None]:
        """Log a failure into the site's own log before it goes back to the server."""
        try:
            yield
        except Exception:
            log.exception("round %d: site %s failed (%s)", round_number, self.name, what)
            raise

    def _saved_rounds(self) -> list[int]:
        """The rounds whose local weights the site has on disk, in order."""
        files = (self.run.checkpoints_dir / LOCAL_FOLDER).glob("round*.safetensors")
        return sorted(int(path.stem[len("round"):]) for path in files)

    def _local_weights(self, *, before: int) -> State | None:
        """The site's own weights after its last round before round ``before``, if any."""
        earlier = [r for r in self._saved_rounds() if r < before]
        saved = self.run.load_state(f"{LOCAL_FOLDER}/round{earlier[-1]}") if earlier else None
        return saved[0] if saved else None

    def _keep_local(self, weights: State, round_number: int) -> None:
        """Save the site's own weights of a round atomically; keep only those that a re-run
        of this round (the last earlier ones) or the next round needs."""
        self.run.save_state(f"{LOCAL_FOLDER}/round{round_number}", weights, {"round": round_number})
        earlier = [r for r in self._saved_rounds() if r < round_number]
        for old in earlier[:-1]:
            (self.run.checkpoints_dir / LOCAL_FOLDER / f"round{old}.safetensors").unlink()
