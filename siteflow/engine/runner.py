"""Executes an experiment: output folder, Lightning trainers, resuming and the site matrix.

Layout of a run folder ``exps/<config>/<note>/``::

    processed_config.yaml            the merged, validated config
    checkpoints/initial.safetensors  the seeded initial weights shared by every site
    checkpoints/<save dir>/last.ckpt Lightning checkpoint of the latest epoch (for resuming)
    checkpoints/<save dir>/final.safetensors  the stage's final weights
    logs/<stage>/                    TensorBoard and CSV logs
    results/progress.json            the test results of every finished stage
    results/site_matrix_<metric>.csv/.png, results/summary.json

Running the same command again resumes: finished stages are skipped (their final weights
are read back), an interrupted stage continues from its ``last.ckpt``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import logging
from pathlib import Path
from typing import Mapping, Sequence

import pytorch_lightning as pl
import torch
import yaml
from safetensors import safe_open
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from siteflow.core.atomic import load_weights, save_weights, write_json, write_text
from siteflow.engine.checkpoint_io import AtomicCheckpointIO
from siteflow.config import ExperimentConfig, SiteConfig, TaskConfig, TrainConfig
from siteflow.tasks.multilabel import MultiLabelLearner, positive_weights
from siteflow.datasets.pooling import build_dataset, loader, pooled_dataset
from siteflow.datasets import canonical_label
from siteflow.engine.results import StageResult, write_results
from siteflow.tasks.learner import ExtraLoss, SegmentationLearner
from siteflow.core.registry import LOSSES, MODELS, STRATEGIES
from siteflow.handover import SiteRecord, load_key, read_handover, write_handover
from siteflow.strategies.base import Carried, State, Strategy

log = logging.getLogger(__name__)

FINAL_WEIGHTS = "final.safetensors"
HANDOVER_FILE = "handover.safetensors"
INITIAL_WEIGHTS = "initial.safetensors"


class RunFolderConflict(ValueError):
    """The run folder holds the outputs of a different config."""


class ExperimentRun:
    """One run of an experiment config in its own folder (implements ``SiteRunner``).

    Args:
        config: the validated experiment.
        run_dir: the output folder, ``exps/<config>/<note>``.
        gpus: GPU indices to train on; ``None`` trains on the CPU. Several GPUs use DDP.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: Path,
        *,
        gpus: Sequence[int] | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.config = config
        self.handover_key = load_key(key_file)
        self.run_dir = Path(run_dir)
        self.gpus = list(gpus) if gpus else None
        self.strategy: Strategy = STRATEGIES.get(config.strategy.name)(**config.strategy.kwargs)
        self.checkpoints_dir = self.run_dir / "checkpoints"
        self.logs_dir = self.run_dir / "logs"
        self.results_dir = self.run_dir / "results"
        self.results: list[StageResult] = self._read_progress()
        self._stage_weights: dict[str, Path] = {}
        self._stage_site_weights: dict[str, dict[str, Path]] = {}
        self._test_sets: list[tuple[str, torch.utils.data.Dataset]] | None = None
        reference = build_dataset(config.tasks[0].site, "test")
        self.task: str = reference.task
        self.label_space: tuple[str, ...] | None = self._label_space() if self.task == "multilabel" else None
        self.class_names: tuple[str, ...] = self.label_space or tuple(reference.class_names)
        self.in_channels: int = reference.in_channels
        self.ignore_index: int | None = reference.ignore_index
        self.image_size: tuple[int, ...] = tuple(reference[0]["image"].shape[1:])

    # -- SiteRunner ------------------------------------------------------------------------

    @property
    def tasks(self) -> Sequence[TaskConfig]:
        return self.config.tasks

    def build_model(self) -> nn.Module:
        """A new segmentation model of the configured architecture, sized by the dataset."""
        spec = self.config.model
        kwargs = {"in_channels": self.in_channels, "num_classes": len(self.class_names), **spec.kwargs}
        if kwargs["num_classes"] != len(self.class_names) or kwargs["in_channels"] != self.in_channels:
            raise ValueError(
                f"common.model.kwargs: the model has in_channels={kwargs['in_channels']}, num_classes="
                f"{kwargs['num_classes']}, the data has {self.in_channels} channels and {len(self.class_names)} classes"
            )
        return MODELS.get(spec.name)(**kwargs)

    @property
    def matrix_metrics(self) -> tuple[str, ...]:
        """The metrics of the site matrix: Dice for segmentation, AUROC for classification."""
        return MultiLabelLearner.matrix_metrics if self.task == "multilabel" else SegmentationLearner.matrix_metrics

    def build_loss(self, train: TrainConfig, tasks: Sequence[TaskConfig] = ()) -> nn.Module:
        if self.ignore_index is not None and train.loss.kwargs.get("ignore_index") != self.ignore_index:
            raise ValueError(
                f"the dataset marks pixels to ignore with label {self.ignore_index}: set "
                f"common.train.loss.kwargs.ignore_index: {self.ignore_index} so that the loss skips them too"
            )
        if self.task == "multilabel" and train.loss.name != "bce":
            raise ValueError(f"common.train.loss.name: multi-label data needs the 'bce' loss, not {train.loss.name!r}")
        loss = LOSSES.get(train.loss.name)(**train.loss.kwargs)
        if getattr(loss, "auto_pos_weight", False) and tasks:
            parts = [self.dataset(task.site, "train") for task in tasks]
            loss = LOSSES.get(train.loss.name)(pos_weight=positive_weights(parts))
        return loss

    def learner(
        self,
        model: nn.Module,
        train: TrainConfig,
        *,
        tasks: Sequence[TaskConfig] = (),
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> pl.LightningModule:
        loss = self.build_loss(train, tasks)
        if self.task == "multilabel":
            return MultiLabelLearner(
                model, loss, train=train, label_names=self.class_names, test_site_names=test_site_names, extra_losses=extra_losses
            )
        return SegmentationLearner(
            model,
            loss,
            train=train,
            class_names=self.class_names,
            test_site_names=test_site_names,
            ignore_index=self.ignore_index,
            extra_losses=extra_losses,
        )

    def initial_state(self, task: TaskConfig) -> Carried:
        if task.checkpoint.load:
            return self._receive(task)
        path = self.checkpoints_dir / INITIAL_WEIGHTS
        if path.is_file():
            return Carried(load_weights(path))
        pl.seed_everything(self.config.seed, workers=True, verbose=False)
        weights = _cpu_copy(self.strategy.build_network(self).state_dict())
        if rank_zero_only.rank == 0:
            save_weights(path, weights)
        return Carried(weights)

    def fit(
        self,
        stage: str,
        tasks: Sequence[TaskConfig],
        carried: Carried,
        *,
        save_dir: str | None,
        epochs: int | None = None,
        seed_offset: int = 0,
    ) -> State:
        directory = self.checkpoints_dir / save_dir if save_dir is not None else None
        if directory is not None:
            final = directory / FINAL_WEIGHTS
            self._stage_weights[stage] = final
            if final.is_file():
                log.info("stage %s: finished before, reading %s", stage, final)
                return load_weights(final)
        train_config = tasks[0].train
        if epochs is not None:
            train_config = dataclasses.replace(train_config, epochs=epochs)
        seed = self.config.seed + (tasks[0].task_id if len(tasks) == 1 else 0) + seed_offset
        pl.seed_everything(seed, workers=True, verbose=False)
        train_set = pooled_dataset([t.site for t in tasks], "train", self.label_space)
        val_set = pooled_dataset([t.site for t in tasks], "val", self.label_space)
        log.info("stage %s: %d training and %d validation samples", stage, len(train_set), len(val_set))
        network = self.strategy.build_network(self)
        network.load_state_dict(carried.weights)
        learner = self.strategy.make_learner(self, network, tasks, carried)
        resume = None
        if directory is not None and tasks[0].checkpoint.resume and (directory / "last.ckpt").is_file():
            resume = directory / "last.ckpt"
            log.info("stage %s: resuming from %s", stage, resume)
        # one checkpoint, rewritten (atomically) after every epoch: what a crashed stage resumes from
        callbacks = [] if directory is None else [
            ModelCheckpoint(dirpath=directory, filename="last", save_top_k=1, enable_version_counter=False)
        ]
        trainer = self._trainer(stage, train_config, callbacks=callbacks, validate=len(val_set) > 0)
        batch_size = train_config.batch_size
        trainer.fit(
            learner,
            train_dataloaders=loader(train_set, batch_size=batch_size, num_workers=self.config.num_workers, shuffle=True, seed=seed),
            val_dataloaders=loader(val_set, batch_size=batch_size, num_workers=self.config.num_workers, shuffle=False)
            if len(val_set)
            else None,
            ckpt_path=resume,
        )
        weights = _cpu_copy(network.state_dict())
        if directory is not None and rank_zero_only.rank == 0:
            save_weights(final, weights)
        return weights

    def site_record(self, task: TaskConfig) -> SiteRecord:
        return SiteRecord.finished_now(task.task_id, task.task_name, build_dataset(task.site, "train").num_samples)

    def hand_over(self, carried: Carried, *, save_dir: str) -> Path:
        path = self.checkpoints_dir / save_dir / HANDOVER_FILE
        if rank_zero_only.rank == 0 and not path.is_file():
            write_handover(
                path,
                carried.weights,
                strategy=self.config.strategy.name,
                model_name=self.config.model.name,
                model_kwargs=self.config.model.kwargs,
                sites=carried.sites,
                extra={"strategy_kwargs": self.config.strategy.kwargs},
                key=self.handover_key,
            )
            log.info("hand-over file for the next site: %s", path)
        return path

    def test(
        self,
        stage: str,
        weights: State,
        *,
        trained_site: str | None,
        site_weights: Mapping[str, State] | None = None,
    ) -> None:
        if any(row.stage == stage for row in self.results):
            return
        self.record(stage, self.evaluate(weights, site_weights=site_weights), trained_site=trained_site)

    def evaluate(
        self,
        weights: State,
        *,
        site_weights: Mapping[str, State] | None = None,
        sites: Sequence[str] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Test the strategy's solver in ``weights`` on the test split of every site whose
        data is here (only ``sites``, by name, if given); returns ``values[site][metric]``.
        ``site_weights`` gives some test sites (by name) weights of their own."""
        train = self.config.tasks[0].train
        trainer = self._trainer("test", train, callbacks=[], validate=False, devices=1, loggers=False)
        test_sets = [(name, data) for name, data in self._test_datasets() if sites is None or name in sites]
        groups = [(weights, test_sets)]
        if site_weights is not None:  # every test site has a model of its own (e.g. its own normalisation)
            groups = [(site_weights.get(name, weights), [(name, data)]) for name, data in test_sets]
        values: dict[str, dict[str, float]] = {}
        for group_weights, group_sets in groups:
            learner = self.learner(self.solver_from(group_weights), train, test_site_names=[name for name, _ in group_sets])
            trainer.test(
                learner,
                dataloaders=[loader(d, batch_size=train.batch_size, num_workers=self.config.num_workers, shuffle=False) for _, d in group_sets],
                verbose=False,
            )
            values.update(learner.test_results)
        return values

    def record(self, stage: str, values: Mapping[str, Mapping[str, float]], *, trained_site: str | None) -> None:
        """Add the row ``stage`` of the site matrix, ``values[site][metric]`` (tested here or
        reported by the sites), and save the progress; a stage recorded before is kept."""
        if any(row.stage == stage for row in self.results):
            return
        path = self._stage_weights.get(stage)
        own = {site: str(p.relative_to(self.run_dir)) for site, p in self._stage_site_weights.get(stage, {}).items()}
        result = StageResult(
            stage,
            trained_site,
            {site: dict(metrics) for site, metrics in values.items()},
            path and str(path.relative_to(self.run_dir)),
            own or None,
        )
        log.info("stage %s: %s", stage, _format_row(result, self.matrix_metrics[0]))
        self.results.append(result)
        if rank_zero_only.rank == 0:
            self._write_progress()

    def save_state(self, name: str, tensors: State, info: dict) -> None:
        """Save a strategy's state (e.g. a federated round's global weights) atomically as
        ``checkpoints/<name>.safetensors`` with the JSON ``info``."""
        if rank_zero_only.rank == 0:
            save_weights(self.checkpoints_dir / f"{name}.safetensors", tensors, metadata={"siteflow.state": json.dumps(info)})

    def save_final(self, stage: str, weights: State, *, save_dir: str, site_weights: Mapping[str, State] | None = None) -> None:
        """Save the final weights of a stage that :meth:`fit` did not save (a federation's last
        round) as ``checkpoints/<save_dir>/final.safetensors``, and each site's own version
        (``final_<site>.safetensors``) where sites keep some weights (FedBN, FFL), for
        ``predict_test.py``."""
        directory = self.checkpoints_dir / save_dir
        own = {site: directory / f"final_{_file_name(site)}.safetensors" for site in site_weights or {}}
        if rank_zero_only.rank == 0:
            save_weights(directory / FINAL_WEIGHTS, weights)
            for site, path in own.items():
                save_weights(path, site_weights[site])
        self._stage_weights[stage] = directory / FINAL_WEIGHTS
        self._stage_site_weights[stage] = own

    def load_state(self, name: str) -> tuple[State, dict] | None:
        """The tensors and info saved by :meth:`save_state`, or None if there are none."""
        path = self.checkpoints_dir / f"{name}.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as handle:
            info = json.loads(handle.metadata()["siteflow.state"])
        return load_weights(path), info

    def solver_from(self, weights: State) -> nn.Module:
        """The strategy's segmentation model, loaded from a network's ``weights``."""
        network = self.strategy.build_network(self)
        network.load_state_dict(weights)
        return self.strategy.solver(network)

    # -- the whole run ---------------------------------------------------------------------

    def execute(self) -> dict:
        """Run the strategy over all stages, then write the site matrices and summary."""
        self.prepare()
        self.strategy.run(self)
        return self.write_results()

    def prepare(self) -> None:
        """Check that the run folder holds this config's run (or none) and record the config."""
        processed = self.config.processed()
        self._check_same_config(processed)
        if rank_zero_only.rank == 0:
            write_text(self.run_dir / "processed_config.yaml", yaml.safe_dump(processed, sort_keys=False))

    def write_results(self) -> dict:
        """Write the site matrices and summary of the recorded stages; returns the summary."""
        if rank_zero_only.rank != 0:
            return {}
        return write_results(
            self.results_dir,
            self.results,
            [site.task_name for site in self.config.sites],
            experiment=self.config.name,
            strategy=self.config.strategy.name,
            own_model_per_site=self.strategy.own_model_per_site,
            metrics=self.matrix_metrics,
        )

    def stage_weights(self) -> list[tuple[str, Path, dict[str, Path]]]:
        """(stage, final weights file, each site's own weights file) of every finished stage
        with saved weights, in order (for prediction)."""
        return [
            (row.stage, self.run_dir / row.weights, {site: self.run_dir / p for site, p in (row.site_weights or {}).items()})
            for row in self.results
            if row.weights
        ]

    # -- helpers ---------------------------------------------------------------------------

    def _trainer(
        self,
        stage: str,
        train: TrainConfig,
        *,
        callbacks: list,
        validate: bool,
        devices: int | None = None,
        loggers: bool = True,
    ) -> pl.Trainer:
        gpus = self.gpus[:devices] if self.gpus and devices else self.gpus
        return pl.Trainer(
            accelerator="gpu" if gpus else "cpu",
            devices=gpus or 1,
            strategy="ddp" if gpus and len(gpus) > 1 else "auto",
            precision=train.precision,
            max_epochs=train.epochs,
            check_val_every_n_epoch=train.val_every_n_epochs,
            limit_val_batches=None if validate else 0,
            num_sanity_val_steps=0,
            log_every_n_steps=train.log_every_n_steps,
            gradient_clip_val=train.gradient_clip_val,
            accumulate_grad_batches=train.accumulate_grad_batches,
            logger=[
                TensorBoardLogger(self.logs_dir, name=stage, version="tensorboard"),
                CSVLogger(self.logs_dir, name=stage, version="csv"),
            ]
            if loggers
            else False,
            callbacks=callbacks,
            enable_checkpointing=bool(callbacks),
            plugins=[AtomicCheckpointIO()],
            default_root_dir=self.run_dir,
            enable_model_summary=False,
            deterministic=False,
        )

    def _receive(self, task: TaskConfig) -> Carried:
        """Read and verify the hand-over file named in ``task``'s ``checkpoint.load``."""
        key_path = f"current_tasks.task_confs.{task.task_id}.checkpoint.load"
        path = Path(task.checkpoint.load)
        path = path if path.is_absolute() else self.checkpoints_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"{key_path}: hand-over file {str(path)!r} does not exist")
        expected = {name: tensor.shape for name, tensor in self.strategy.build_network(self).state_dict().items()}
        weights, manifest = read_handover(
            path,
            key=self.handover_key,
            model_name=self.config.model.name,
            model_kwargs=self.config.model.kwargs,
            strategy=self.config.strategy.name,
            expected_shapes=expected,
            receiving_task_id=task.task_id if self.strategy.hands_over else None,
            site_order=[site.task_id for site in self.config.sites] * self.strategy.cycles,
        )
        log.info("received %s: trained by %s", path, " -> ".join(s.task_name for s in manifest.sites) or "nobody")
        return Carried(weights, manifest.sites)

    def _check_same_config(self, processed: dict) -> None:
        """Refuse to resume a run folder that an other config wrote into."""
        path = self.run_dir / "processed_config.yaml"
        if not path.is_file():
            return
        previous = yaml.safe_load(path.read_text())
        current = yaml.safe_load(yaml.safe_dump(processed))  # the same round trip as the saved one
        changed = [key for key in _differences(previous, current) if key != "source"]
        if changed:
            raise RunFolderConflict(
                f"{self.run_dir} holds a run of a different config (changed: {', '.join(changed[:5])}); "
                "resuming it would mix the two: choose another -n/--note or delete that folder"
            )

    def dataset(self, site: SiteConfig, split: str) -> torch.utils.data.Dataset:
        """A site's split, its labels placed in the study's label space for multi-label data."""
        return pooled_dataset([site], split, self.label_space)

    def _label_space(self) -> tuple[str, ...]:
        """The union of all sites' labels, in order of first appearance."""
        names: list[str] = []
        for index, site in enumerate(self.config.sites):
            if site.available:
                labels = build_dataset(site, "test").label_names
            else:  # a deployed run: another hospital's labels come from the config
                if site.dataset.kwargs.get("labels") is None:
                    raise ValueError(
                        f"all_tasks_datasets[{index}].kwargs.labels: site {site.task_name}'s data is not here, "
                        "so its labels must be listed in the config"
                    )
                labels = [canonical_label(name) for name in site.dataset.kwargs["labels"]]
            names.extend(name for name in labels if name not in names)
        return tuple(names)

    def _test_datasets(self) -> list[tuple[str, torch.utils.data.Dataset]]:
        if self._test_sets is None:
            self._test_sets = [(site.task_name, self.dataset(site, "test")) for site in self.config.sites if site.available]
            for site in self.config.sites:
                if not site.available:
                    log.warning("site %s: its data is not here, so it is not tested", site.task_name)
        return self._test_sets

    def _read_progress(self) -> list[StageResult]:
        path = self.results_dir / "progress.json"
        if not path.is_file():
            return []
        entries = json.loads(path.read_text())["stages"]
        return [StageResult(**entry) for entry in entries]

    def _write_progress(self) -> None:
        write_json(self.results_dir / "progress.json", {"stages": [dataclasses.asdict(r) for r in self.results]})


def _file_name(name: str) -> str:
    """A file-name-safe version of a site or stage name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _cpu_copy(state: dict[str, torch.Tensor]) -> State:
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}


def _differences(old: object, new: object, path: str = "") -> list[str]:
    """Key paths at which two plain-data trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(old.keys() | new.keys(), key=str) for d in _differences(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [path or "<whole config>"]


def _format_row(result: StageResult, metric: str) -> str:
    return ", ".join(f"{site} {metric} {values[metric]:.3f}" for site, values in result.values.items())
