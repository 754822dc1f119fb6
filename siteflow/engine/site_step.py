"""The one site step: a Lightning trainer, seeding, resuming, fitting and testing.

Every strategy trains through :meth:`SiteStep.fit` and tests through :meth:`SiteStep.test`,
whatever moves the weights between sites; what differs between strategies (the network,
the learner) is passed in as factories, called after the step has seeded everything, with
the Lightning callbacks and the step budget the strategy adds (a
:class:`~siteflow.strategies.base.Trainee`).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from siteflow.config import SiteConfig, SiteRun, TrainConfig
from siteflow.core.types import Weights
from siteflow.datasets.pooling import loader
from siteflow.engine.checkpoint_io import AtomicCheckpointIO
from siteflow.engine.divergence import DivergenceGuard
from siteflow.engine.random_state import RandomStateCheckpoint
from siteflow.privacy import SITES_DIR
from siteflow.privacy.dp_sgd import private_training
from siteflow.strategies.base import Trainee
from siteflow.tasks import Task

log = logging.getLogger(__name__)


class SiteStep:
    """Trains and tests on the sites whose data is here.

    Args:
        task: the study's ML task (datasets, learners).
        seed: the experiment's seed; a stage at one site uses ``seed + task_id + offset``.
        num_workers: dataloader workers.
        logs: the run's log folder (TensorBoard and CSV per stage).
        root: Lightning's default root folder.
        gpus: GPU indices; None trains on the CPU. Several GPUs use DDP.
        cpu_processes: without GPUs, train with this many CPU processes under DDP (gloo).
        deterministic: Lightning's deterministic mode (``torch.use_deterministic_algorithms``,
            no cuDNN benchmarking, ``CUBLAS_WORKSPACE_CONFIG`` set on GPUs): bit-for-bit
            repeatable runs on one machine, at some cost in speed.
        results_dir: the run's results folder, where a site training with ``train.dp_sgd``
            keeps its privacy ledger (:data:`siteflow.privacy.SITES_DIR`).
    """

    def __init__(
        self,
        task: Task,
        *,
        seed: int,
        num_workers: int,
        logs: Path,
        root: Path,
        gpus: Sequence[int] | None,
        cpu_processes: int = 1,
        deterministic: bool = False,
        results_dir: Path | None = None,
    ) -> None:
        self.task = task
        self.seed = seed
        self.num_workers = num_workers
        self.logs = logs
        self.root = root
        self.gpus = list(gpus) if gpus else None
        self.cpu_processes = cpu_processes
        self.deterministic = deterministic
        self.results_dir = results_dir

    def fit(
        self,
        stage: str,
        site_runs: Sequence[SiteRun],
        start: Weights,
        trainee: Trainee,
        *,
        checkpoint_dir: Path | None,
        resume: bool,
        epochs: int | None = None,
        seed_offset: int = 0,
    ) -> Weights:
        """Train ``trainee`` from ``start`` on the pooled training data of ``site_runs``.

        With ``checkpoint_dir``, ``last.ckpt`` there is rewritten (atomically) after every
        epoch, and with ``resume`` an existing one is continued. Returns the final weights
        (on the CPU).

        Raises:
            TrainingDiverged: a training loss or a weight became NaN or infinite (see
                :mod:`~siteflow.engine.divergence`)."""
        train_config = site_runs[0].train
        if epochs is not None:
            train_config = dataclasses.replace(train_config, epochs=epochs)
        seed = self.seed + (site_runs[0].task_id if len(site_runs) == 1 else 0) + seed_offset
        pl.seed_everything(seed, workers=True, verbose=False)
        sites = [t.site for t in site_runs]
        train_set = self.task.dataset(sites, "train")
        val_set = self.task.dataset(sites, "val")
        log.info("stage %s: %d training and %d validation samples", stage, len(train_set), len(val_set))
        network = trainee.build_network()
        network.load_state_dict(start)
        learner = trainee.make_learner(network)
        own_callbacks = list(trainee.callbacks(network))
        last = checkpoint_dir / "last.ckpt" if checkpoint_dir is not None else None
        resume_from = last if resume and last is not None and last.is_file() else None
        if resume_from is not None:
            log.info("stage %s: resuming from %s", stage, resume_from)
        batch_size = train_config.batch_size
        train_loader = loader(train_set, batch_size=batch_size, num_workers=self.num_workers, shuffle=True, seed=seed)
        private = []
        if train_config.dp_sgd is not None:  # Poisson batches, per-sample clipping and noise, accounting
            if self.results_dir is None:
                raise ValueError("train.dp_sgd needs a results folder for the site's privacy ledger")
            train_loader, dp_sgd = private_training(
                train_config.dp_sgd, train_loader, batch_size=batch_size, folder=self.results_dir / SITES_DIR,
                site="+".join(t.task_name for t in site_runs), stage=stage, seed=seed,
            )
            private.append(dp_sgd)
        # one checkpoint, rewritten (atomically) after every epoch with the random streams: what a
        # crashed stage resumes from, to the same weights as a run that never stopped
        callbacks = [] if checkpoint_dir is None else [
            ModelCheckpoint(
                dirpath=checkpoint_dir, filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
            ),
            RandomStateCheckpoint(train_loader.generator),
        ]
        callbacks += [*private, *own_callbacks]
        if trainee.max_steps is not None:
            callbacks.append(ValidateAtStop())
        if trainee.schedule_epoch:
            callbacks.append(ScheduleFrom(trainee.schedule_epoch))
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))  # lr-<optimizer> in the logs, epoch by epoch
        callbacks.insert(0, DivergenceGuard("+".join(t.task_name for t in site_runs), stage))  # before the checkpoint is written
        trainer = self.trainer(stage, train_config, callbacks=callbacks, validate=len(val_set) > 0, max_steps=trainee.max_steps)
        trainer.fit(
            learner,
            train_dataloaders=train_loader,
            val_dataloaders=loader(val_set, batch_size=batch_size, num_workers=self.num_workers, shuffle=False)
            if len(val_set)
            else None,
            ckpt_path=resume_from,
        )
        return cpu_copy(network.state_dict())

    def test(
        self,
        train: TrainConfig,
        solvers: Iterable[tuple[nn.Module, Sequence[SiteConfig]]],
    ) -> dict[str, dict[str, float]]:
        """Test each solver on its sites' test splits; returns ``values[site][metric]``."""
        trainer = self.trainer("test", train, callbacks=[], validate=False, devices=1, loggers=False)
        values: dict[str, dict[str, float]] = {}
        loss = self.task.build_loss(train)
        for solver, sites in solvers:
            learner = self.task.learner(solver, loss, train, test_site_names=[site.task_name for site in sites])
            trainer.test(
                learner,
                dataloaders=[
                    loader(self.task.dataset([site], "test"), batch_size=train.batch_size, num_workers=self.num_workers, shuffle=False)
                    for site in sites
                ],
                verbose=False,
            )
            values.update(learner.test_results)
        return values

    def trainer(
        self,
        stage: str,
        train: TrainConfig,
        *,
        callbacks: list,
        validate: bool,
        devices: int | None = None,
        loggers: bool = True,
        max_steps: int | None = None,
    ) -> pl.Trainer:
        """A Lightning trainer for ``stage`` with the configured devices and precision (and
        ``max_steps`` optimiser steps at most, if given)."""
        if self.gpus:
            chosen: list[int] | int = self.gpus[:devices] if devices else self.gpus
            count = len(chosen)
        else:
            chosen = count = min(devices or self.cpu_processes, self.cpu_processes)
        return pl.Trainer(
            accelerator="gpu" if self.gpus else "cpu",
            devices=chosen,
            strategy="ddp" if count > 1 else "auto",
            precision=train.precision,
            max_epochs=train.epochs,
            max_steps=-1 if max_steps is None else max_steps,
            check_val_every_n_epoch=train.val_every_n_epochs,
            limit_val_batches=None if validate else 0,
            num_sanity_val_steps=0,
            log_every_n_steps=train.log_every_n_steps,
            gradient_clip_val=train.gradient_clip_val,
            accumulate_grad_batches=train.accumulate_grad_batches,
            logger=[
                TensorBoardLogger(self.logs, name=stage, version="tensorboard"),
                CSVLogger(self.logs, name=stage, version="csv"),
            ]
            if loggers
            else False,
            callbacks=callbacks,
            enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
            plugins=[AtomicCheckpointIO()],
            default_root_dir=self.root,
            enable_model_summary=False,
            deterministic=self.deterministic,
        )


class ValidateAtStop(Callback):
    """Stops a fit whose trainer reached its ``max_steps`` through ``Trainer.should_stop`` (as
    early stopping does), so that it validates once at the stop: Lightning's ``max_steps``
    alone ends an epoch midway without validating."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class ScheduleFrom(Callback):
    """Starts the fit's learning-rate schedulers at epoch ``epoch`` instead of at their start:
    each is stepped ``epoch`` times before the first batch (Lightning then steps it once per
    epoch). A fit that resumes from a checkpoint gets the schedulers' saved state over this
    (Lightning restores it after ``on_fit_start``)."""

    def __init__(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be at least 0, got {epoch}")
        self.epoch = epoch

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for config in trainer.lr_scheduler_configs:
            if config.interval != "epoch":
                raise ValueError(f"a schedule started at epoch {self.epoch} must step per epoch, not per {config.interval}")
            with warnings.catch_warnings():  # stepped on purpose before the first optimiser step
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
                for _ in range(self.epoch):
                    config.scheduler.step()


def cpu_copy(state: Mapping[str, torch.Tensor]) -> Weights:
    """Detached CPU copies of ``state``'s tensors."""
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}
