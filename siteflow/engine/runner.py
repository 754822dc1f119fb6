"""Executes an experiment: the strategy's calls answered with the run folder and the site step.

:class:`ExperimentRun` is the :class:`~siteflow.strategies.base.StudyContext` a strategy runs
in. Running the same command again resumes: finished stages are skipped (their final
weights are read back), an interrupted stage continues from its ``last.ckpt``, and a
federation continues after its last saved round.

Whatever the strategy, its own state (:meth:`~siteflow.strategies.base.Strategy.state_dict`)
is saved with every stage it finishes (``checkpoints/<save dir>/strategy_state.safetensors``,
written before the stage's final weights) and with a driver's saved state (a federation's
round file), and given back where a resumed run reads them: a finished stage read back
restores the strategy as it was when that stage finished. A strategy's ``run`` replays its
loop on resume, skipping what is done, so it reaches the first unfinished stage with the
strategy as the interrupted run had it, whatever the loop advanced on the way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from siteflow.config import ConfigError, ExperimentConfig, SiteRun
from siteflow.core.atomic import load_weights, save_weights
from siteflow.core.registry import STRATEGIES
from siteflow.core.site_matrix import StageResult
from siteflow.core.stalled import stalled_sites
from siteflow.core.types import SiteRecord, Tensors, Weights
from siteflow.datasets.pooling import build_dataset, check_sites
from siteflow.engine.progress import StudyProgress
from siteflow.engine.results import write_results
from siteflow.engine.run_folder import INITIAL_WEIGHTS, RunFolder
from siteflow.engine.site_step import SiteStep, cpu_copy
from siteflow.handover import load_key, read_handover, write_handover
from siteflow.strategies.base import SiteInput, SolverFactory, Strategy, Trainee
from siteflow.strategies.federated.simulation import simulate
from siteflow.tasks import Task, build_task

log = logging.getLogger(__name__)

HANDOVER_FILE = "handover.safetensors"
STRATEGY_STATE = "strategy_state"
"""The strategy's state saved with a finished stage: ``checkpoints/<save dir>/strategy_state.safetensors``."""
STRATEGY_PREFIX = "strategy/"
"""The strategy's tensors in a state file (its JSON values are under the key ``"strategy"``)."""


class ExperimentRun:
    """One run of an experiment config in its own folder.

    Args:
        config: the validated experiment.
        run_dir: the output folder, ``exps/<config>/<note>``.
        gpus: GPU indices to train on; ``None`` trains on the CPU. Several GPUs use DDP.
        cpu_processes: without GPUs, train every site with this many CPU processes under
            DDP (gloo): how DDP is tested on a machine without GPUs.
        key_file: the consortium key that signs and verifies hand-over files.
        strategy: the strategy to run (default: the config's).
        progress: counts the stages of the whole study (one shared by the seeds of a repeated
            study); by default, this run's own.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: Path,
        *,
        gpus: Sequence[int] | None = None,
        cpu_processes: int = 1,
        key_file: Path | None = None,
        strategy: Strategy | None = None,
        progress: StudyProgress | None = None,
    ) -> None:
        self.config = config
        self.handover_key = load_key(key_file)
        self.folder = RunFolder(run_dir)
        self.strategy: Strategy = strategy or STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs)
        self.task: Task = build_task(config)
        self.site_step = SiteStep(
            self.task, seed=config.seed, num_workers=config.num_workers, logs=self.folder.logs, root=self.folder.path, gpus=gpus,
            cpu_processes=cpu_processes, deterministic=config.deterministic, results_dir=self.folder.results_dir,
        )
        self.started = time.perf_counter()
        self.warned_stalled: set[str] = set()  # sites already warned about (see _warn_stalled)
        self.progress = progress or StudyProgress()
        for site in config.sites:
            if not site.available:
                log.warning("site %s: its data is not here, so it is not tested", site.task_name)

    @property
    def site_runs(self) -> Sequence[SiteRun]:
        return self.config.site_runs

    @property
    def results(self) -> list[StageResult]:
        return self.folder.results

    # -- StudyContext: starting, training, handing over -----------------------------------

    def start(self, site_run: SiteRun, build_network: Callable[[], nn.Module], *, site_order: Sequence[int] | None = None) -> SiteInput:
        if site_run.checkpoint.load:
            return self._receive(site_run, build_network, site_order)
        path = self.folder.checkpoints / INITIAL_WEIGHTS
        if path.is_file():
            return SiteInput(load_weights(path))
        pl.seed_everything(self.config.seed, workers=True, verbose=False)
        weights = cpu_copy(build_network().state_dict())
        if rank_zero_only.rank == 0:
            save_weights(path, weights)
        return SiteInput(weights)

    def fit(
        self,
        stage: str,
        site_runs: Sequence[SiteRun],
        start: Weights,
        trainee: Trainee,
        *,
        save_dir: str | None,
        epochs: int | None = None,
        seed_offset: int = 0,
    ) -> Weights:
        if save_dir is not None:
            finished = self.folder.finished_weights(stage, save_dir)
            if finished is not None:
                log.info("stage %s: finished before, reading its final weights", stage)
                self.load_state(f"{save_dir}/{STRATEGY_STATE}")  # the strategy as this stage left it
                return finished
        position = self.progress.stage_started(stage)
        if rank_zero_only.rank == 0:
            log.info("%s", position.describe())
            self.folder.save_position(position.as_json())
        directory = self.folder.stage_dir(save_dir) if save_dir is not None else None
        weights = self.site_step.fit(
            stage, site_runs, start, trainee, checkpoint_dir=directory, resume=site_runs[0].checkpoint.resume,
            epochs=epochs, seed_offset=seed_offset,
        )
        if save_dir is not None:
            if self.strategy.state_dict():  # first: a stage whose final weights exist has its strategy state
                self.save_state(f"{save_dir}/{STRATEGY_STATE}", {}, {})
            self.folder.save_stage_weights(save_dir, weights)
        return weights

    def sample_count(self, site_run: SiteRun) -> int:
        return build_dataset(site_run.site, "train").num_samples

    def site_record(self, site_run: SiteRun) -> SiteRecord:
        return SiteRecord.finished_now(site_run.task_id, site_run.task_name, self.sample_count(site_run))

    def hand_over(self, carried: SiteInput, *, save_dir: str) -> Path:
        path = self.folder.stage_dir(save_dir) / HANDOVER_FILE
        if rank_zero_only.rank == 0 and not path.is_file():
            write_handover(
                path,
                carried.weights,
                strategy=self.config.strategy.name,
                strategy_options=self.config.strategy.kwargs,
                model_name=self.config.model.name,
                model_kwargs=self.config.model.kwargs,
                sites=carried.sites,
                key=self.handover_key,
            )
            log.info("hand-over file for the next site: %s", path)
        return path

    # -- StudyContext: testing and recording ------------------------------------------------

    def evaluate(
        self,
        weights: Weights,
        solver: SolverFactory,
        *,
        own_weights: Mapping[str, Weights] | None = None,
        sites: Sequence[str] | None = None,
    ) -> dict[str, dict[str, float]]:
        here = [site for site in self.config.sites if site.available and (sites is None or site.task_name in sites)]
        if own_weights is None:
            groups = [(solver(weights), here)]
        else:  # every test site has a model of its own (e.g. its own normalisation)
            groups = ((solver(own_weights.get(site.task_name, weights)), [site]) for site in here)  # one model at a time
        return self.site_step.test(self.config.site_runs[0].train, groups)

    def test(
        self,
        stage: str,
        weights: Weights,
        solver: SolverFactory,
        *,
        trained_site: str | None,
        own_weights: Mapping[str, Weights] | None = None,
    ) -> None:
        if not self.folder.recorded(stage):
            self.record(stage, self.evaluate(weights, solver, own_weights=own_weights), trained_site=trained_site)

    def record(self, stage: str, values: Mapping[str, Mapping[str, float]], *, trained_site: str | None) -> None:
        result = self.folder.record(stage, values, trained_site=trained_site)
        if result is not None:
            metric = self.task.matrix_metrics[0]
            log.info("stage %s: %s", stage, ", ".join(f"{site} {metric} {v[metric]:.3f}" for site, v in result.values.items()))
            log.info(
                "study %s: %d stages recorded, %.0f s elapsed in this process",
                self.config.name, len(self.folder.results), time.perf_counter() - self.started,
            )
            self._warn_stalled(stage, metric)

    def _warn_stalled(self, stage: str, metric: str) -> None:
        """Warn, once per site, when a site's ``metric`` stays flat while the others rise
        (:func:`~siteflow.core.stalled.stalled_sites`)."""
        names = [site.task_name for site in self.config.sites]
        for site, (rise, others) in stalled_sites(self.folder.results, names, metric).items():
            if site not in self.warned_stalled:
                self.warned_stalled.add(site)
                log.warning(
                    "after %s, site %s's %s rose by %+.3f since the first test while the other sites' rose by %+.3f on "
                    "average: it is not learning (FedBN: see norm_statistics in the troubleshooting guide)",
                    stage, site, metric, rise, others,
                )

    def recorded(self, stage: str) -> bool:
        return self.folder.recorded(stage)

    # -- StudyContext: state ------------------------------------------------------------------

    def save_state(self, name: str, tensors: Tensors, info: dict) -> None:
        state = self.strategy.state_dict()
        own = {f"{STRATEGY_PREFIX}{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
        values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        self.folder.save_state(name, {**tensors, **own}, {**info, "strategy": values})

    def load_state(self, name: str) -> tuple[Tensors, dict] | None:
        saved = self.folder.load_state(name)
        if saved is not None and "strategy" in saved[1]:
            tensors, info = saved
            own = {k[len(STRATEGY_PREFIX):]: v for k, v in tensors.items() if k.startswith(STRATEGY_PREFIX)}
            self.strategy.load_state_dict({**own, **info["strategy"]})
        return saved

    def save_final(self, stage: str, weights: Weights, *, save_dir: str, own_weights: Mapping[str, Weights] | None = None) -> None:
        self.folder.save_final(stage, weights, save_dir=save_dir, own_weights=own_weights)

    def site_folder(self, site: str) -> Path:
        return self.folder.site_folder(site)

    def result_path(self, name: str) -> Path:
        return self.folder.results_dir / name

    # -- StudyContext: rounds -----------------------------------------------------------------

    def simulate_rounds(self, strategy: Strategy) -> None:
        simulate(strategy, self)

    # -- the whole run ---------------------------------------------------------------------

    def execute(self, *, seed_index: int = 1) -> dict:
        """Run the strategy over all stages, then write the site matrices and summary (the
        run folder locked meanwhile by the first process; the other processes of a DDP run
        are its own). Every stage that trains logs its place in the study (stage k of the
        strategy's planned stages, of seed ``seed_index`` in a repeated study)."""
        with self.folder.locked() if rank_zero_only.rank == 0 else contextlib.nullcontext():
            self.prepare()
            self.progress.start_seed(self.strategy.planned_stages(self), seed=self.config.seed, seed_index=seed_index)
            self.strategy.run(self)
            self.folder.save_position({"state": "finished", "elapsed_s": round(self.progress.elapsed(), 1)})
            return self.write_results()

    def prepare(self, *, check_data: bool = True) -> None:
        """Check every split of every site whose data is here (each file opened, see
        ``SiteDataset.check``; not on a server that trains nothing: ``check_data=False``),
        check that the run folder holds this config's run (or none), record the config and
        the task's summary of the data (``Task.write_data_summary``): all before anything
        trains."""
        if check_data:
            self._check_loads()
            check_sites(self.config.sites)
        self.folder.claim(self.config.processed())
        if check_data and rank_zero_only.rank == 0:
            self.task.write_data_summary(self.folder.results_dir)

    def write_results(self) -> dict:
        """Write the task's files of the recorded stages (``Task.write_stage_outputs``), the
        site matrices and the summary; returns the summary."""
        if rank_zero_only.rank != 0:
            return {}
        site_names = [site.task_name for site in self.config.sites]
        self.task.write_stage_outputs(self.folder.results_dir, self.folder.results, site_names)
        return write_results(
            self.folder.results_dir,
            self.folder.results,
            site_names,
            experiment=self.config.name,
            strategy=self.config.strategy.name,
            metrics=self.task.matrix_metrics,
            summarizer=self.strategy.summarize,
        )

    def _load_path(self, site_run: SiteRun) -> Path:
        """The hand-over file of ``site_run``'s ``checkpoint.load`` (a relative path starts at
        the run's checkpoints folder)."""
        path = Path(site_run.checkpoint.load)
        return path if path.is_absolute() else self.folder.checkpoints / path

    def _check_loads(self) -> None:
        """Before anything trains: every ``checkpoint.load`` names a regular file (ConfigError
        at its key, naming the config file)."""
        for site_run in self.config.site_runs:
            if site_run.checkpoint.load is None:
                continue
            path = self._load_path(site_run)
            if not path.is_file():
                what = "does not exist" if not path.exists() else "is not a regular file"
                raise ConfigError(
                    f"current_tasks.task_confs.{site_run.task_id}.checkpoint.load", f"hand-over file {str(path)!r} {what}"
                ).in_file(str(self.config.source))

    def _receive(self, site_run: SiteRun, build_network: Callable[[], nn.Module], site_order: Sequence[int] | None) -> SiteInput:
        """Read and verify the hand-over file named in ``site_run``'s ``checkpoint.load``
        (checked to exist by :meth:`prepare`)."""
        path = self._load_path(site_run)
        expected = build_network().state_dict()
        weights, manifest = read_handover(
            path,
            key=self.handover_key,
            model_name=self.config.model.name,
            model_kwargs=self.config.model.kwargs,
            strategy=self.config.strategy.name,
            strategy_options=self.config.strategy.kwargs,
            expected_shapes={name: tensor.shape for name, tensor in expected.items()},
            expected_dtypes={name: tensor.dtype for name, tensor in expected.items()},
            receiving_task_id=site_run.task_id if site_order is not None else None,
            site_order=site_order or [site.task_id for site in self.config.sites],
            site_names={site.task_id: site.task_name for site in self.config.sites},
            reference=expected,
        )
        log.info("received %s: trained by %s", path, " -> ".join(s.task_name for s in manifest.sites) or "nobody")
        return SiteInput(weights, manifest.sites)
