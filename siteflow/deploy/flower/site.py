"""A hospital's part of a deployed federation: its own site's round steps.

The SuperNode's ``task-id`` picks the site: the config is loaded restricted to that task
(``load_config(..., task_ids=[id])``), so only that site's data is read. The site's files go
to its own run folder, ``<exps-root>/<config>/<note>/<site name>/`` (Lightning logs and, in
``sites/<site>/``, the weights that never leave the site). A ClientApp runs in a fresh
process for every message: whatever must outlive a message is on that disk. What the site
does in a round is the strategy's own ``site_step``, the same as in a simulation.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from siteflow.config import load_config
from siteflow.config.folders import run_folder
from siteflow.core.atomic import safe_name, save_weights
from siteflow.core.types import Weights
from siteflow.deploy.flower.logs import log_to
from siteflow.deploy.flower.protocol import NodeSettings, RunSettings, experiment_fingerprint
from siteflow.datasets.pooling import check_sites
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import FederatedSite, FederatedStrategy, SiteUpdate, round_stage
from siteflow.strategies.federated.federation import FINAL_DIR

log = logging.getLogger(__name__)


class DeployedSite:
    """One site of a deployed federation: it trains and tests only its own task.

    Args:
        run_settings: the run config (the config name, the run's note).
        node: the SuperNode's node config (task id, the site's own config, exps root, GPU).
        server_fingerprint: the server's :func:`experiment_fingerprint`, checked against this
            site's config before the site writes anything.
    """

    def __init__(self, run_settings: RunSettings, node: NodeSettings, *, server_fingerprint: str | None = None) -> None:
        config = load_config(node.config or run_settings.config, task_ids=[node.task_id])
        self.fingerprint = experiment_fingerprint(config)
        if server_fingerprint is not None:
            self.check(server_fingerprint, site=config.site_runs[0].task_name)
        site_run = config.site_runs[0]
        run_dir = run_folder(node.exps_root, config.name, run_settings.note, note_key="run config note (the server's choice)") / site_run.task_name
        log_to(run_dir / "logs" / "flower_site.log")  # one file: every message is a new process
        self.run = ExperimentRun(config, run_dir, gpus=None if node.gpu is None else [node.gpu])
        if not isinstance(self.run.strategy, FederatedStrategy):
            raise ValueError(f"{config.source}: strategy {config.strategy.name!r} is not federated")
        self.strategy: FederatedStrategy = self.run.strategy
        check_sites([site_run.site])  # its own data only: the other hospitals' is theirs to check
        self.run.prepare(check_data=False)
        self.site = FederatedSite(self.run, site_run)

    @property
    def name(self) -> str:
        """The site's name (``task_name``)."""
        return self.site.name

    @property
    def task_id(self) -> int:
        return self.site.site_run.task_id

    def check(self, fingerprint: str, *, site: str | None = None) -> None:
        """Refuse a server whose config differs in seed, model, strategy or the list of sites."""
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"site {site or self.name}: the server's config differs from this site's in seed, model, strategy "
                "or the list of sites; both must describe the same experiment"
            )

    def train(self, received: Weights, round_number: int) -> SiteUpdate:
        """The strategy's site step of round ``round_number``."""
        with self._logged(round_number, "training"):
            update = self.strategy.site_step(self.site, received, round_number)
        log.info("round %d: site %s trained on %d samples", round_number, self.name, update.num_samples)
        return update

    def test(self, global_weights: Weights, round_number: int) -> dict[str, float]:
        """The metrics of round ``round_number``'s global model (with the site's own kept
        weights) on the site's own test split."""
        with self._logged(round_number, "testing"):
            weights = self.strategy.site_start_weights(self.site, global_weights, before=round_number + 1)
            if round_number == self.strategy.rounds:
                self._save_own(round_stage(round_number), FINAL_DIR, weights)
            values = self.site.evaluate(weights, self.strategy.solver_from(self.run.task))[self.name]
        metric = self.run.task.matrix_metrics[0]
        log.info("round %d: site %s tested: %s %.4f", round_number, self.name, metric, values[metric])
        return values

    def finish(self, global_weights: Weights) -> dict[str, float]:
        """The strategy's finishing step (FFL's fine-tuning), tested on the site's own split."""
        with self._logged(self.strategy.rounds, "finishing"):
            weights = self.strategy.site_finish(self.site, global_weights)
            self._save_own(self.strategy.finish_stage, self.strategy.finish_stage, weights)
            return self.site.evaluate(weights, self.strategy.solver_from(self.run.task))[self.name]

    def _save_own(self, stage: str, save_dir: str, weights: Weights) -> None:
        """Keep the model this site is tested with at the end of the study (the stage
        ``stage``), in its own run folder (``checkpoints/<save_dir>/final_<site>.safetensors``):
        the server never sees a site's own weights, so ``predict_test.py`` of
        this site's model runs here, on them (``--weights``)."""
        path = self.run.folder.stage_dir(save_dir) / f"final_{safe_name(self.name)}.safetensors"
        save_weights(path, weights)
        log.info("%s: site %s keeps its final model as %s", stage, self.name, path)

    @contextmanager
    def _logged(self, round_number: int, what: str) -> Iterator[None]:
        """Log a failure into the site's own log before it goes back to the server."""
        try:
            yield
        except Exception:
            log.exception("round %d: site %s failed (%s)", round_number, self.name, what)
            raise
