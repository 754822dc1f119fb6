"""The ML problem of a study as an object, and the one learner base its learners extend.

A :class:`Task` is chosen by the sites' data (``DataSpec.task``, registered in
:data:`siteflow.core.registry.TASKS`). It knows what the data looks like from the config alone
(classes or label space, input channels, image size, ignored label), and builds what a site
trains and tests with: the model, the loss, the learner, the site datasets; it names the
metrics of the site matrix and writes the sample-wise prediction outputs of ``predict_test.py``.
Strategies and the engine only ever talk to this interface, so a new problem (3D
segmentation, masked-image pre-training) is a new task, not a branch in the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from siteflow.config import Component, ExperimentConfig, SiteConfig, TrainConfig
from siteflow.core.registry import DATASETS, LOSSES, MODELS, TASKS
from siteflow.core.site_matrix import StageResult
from siteflow.datasets.spec import DataSpec
from siteflow.datasets.pooling import Split, pooled_dataset
from siteflow.losses.class_balance import CountWeighted

ExtraLoss = Callable[["Learner"], torch.Tensor]
"""A strategy's term added to the loss of every training step (FedProx's proximal term)."""

Batch = dict
"""A collated batch: ``"image"`` (N, C_in, *spatial), the task's targets, ``"id"`` list[str]."""


def configure_optimization(train: TrainConfig, parameters) -> Any:
    """Lightning's ``configure_optimizers`` value for the configured optimizer and scheduler."""
    optimizer = getattr(torch.optim, train.optimizer.name)(parameters, **train.optimizer.kwargs)
    for group in optimizer.param_groups:  # a model's parameter_groups scale the lr per group (layer-wise decay)
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
    if train.scheduler is None:
        return optimizer
    scheduler = getattr(torch.optim.lr_scheduler, train.scheduler.name)(optimizer, **train.scheduler.kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Learner(pl.LightningModule):
    """Model + loss + metrics, trained by a Lightning ``Trainer``: the one training step.

    A subclass says how the loss reads a batch (:meth:`loss_of`), which metrics validation and
    testing update (:meth:`update_validation`, :meth:`update_test`, :meth:`test_result`) and
    what prediction returns; strategy-specific terms come in as ``extra_losses``.

    Args:
        model: images (N, C_in, *spatial) -> outputs (logits).
        loss: the task's loss.
        train: optimizer, scheduler and logging settings.
        test_site_names: the name of each test dataloader, in order, for ``trainer.test``.
        extra_losses: callables added to the loss of every training step.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.train_config = train
        self.test_site_names = tuple(test_site_names)
        self.extra_losses = list(extra_losses)
        self.test_results: dict[str, dict[str, float]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C_in, *spatial) -> the model's outputs."""
        return self.model(images)

    @abstractmethod
    def loss_of(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The task's loss of ``outputs`` against the batch's targets (a scalar)."""

    @abstractmethod
    def update_validation(self, outputs: torch.Tensor, batch: Batch) -> None:
        """Update (and log) the validation metrics with one batch."""

    @abstractmethod
    def update_test(self, site_index: int, outputs: torch.Tensor, batch: Batch) -> None:
        """Update test site ``site_index``'s metrics with one batch."""

    @abstractmethod
    def test_result(self, site_index: int) -> dict[str, float]:
        """Test site ``site_index``'s metrics over its whole test split (then reset)."""

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        outputs = self(batch["image"])
        loss = self.loss_of(outputs, batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(outputs))
        for term in self.extra_losses:
            loss = loss + term(self)
        return loss

    def evaluation_outputs(self, batch: Batch) -> torch.Tensor:
        """The model's outputs that validation, testing and prediction score against the
        batch's targets: here the forward pass of ``batch["image"]``. A task whose evaluation
        runs the model otherwise (segmentation: sliding windows, outputs at the labels' native
        size) overrides it."""
        return self(batch["image"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs = self.evaluation_outputs(batch)
        self.log("val/loss", self.loss_of(outputs, batch), prog_bar=True, batch_size=len(outputs))
        self.update_validation(outputs, batch)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.update_test(dataloader_idx, self.evaluation_outputs(batch), batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = {}
        for index, site in enumerate(self.test_site_names):
            result = self.test_result(index)
            self.test_results[site] = result
            for key, value in result.items():
                self.log(f"test/{site}/{key}", value, add_dataloader_idx=False)

    def configure_optimizers(self) -> Any:
        """The configured optimizer over the model's ``parameter_groups()`` where it defines
        them (each may carry an ``lr_scale``), else over all parameters."""
        groups = getattr(self.model, "parameter_groups", None)
        return configure_optimization(self.train_config, groups() if groups is not None else self.parameters())


@dataclass(frozen=True)
class ModelToTest:
    """Weights to evaluate (``predict_test.py``), and each site's own version where sites
    keep some (FedBN, FFL), already loaded into solvers by the caller's ``solver_for``."""

    name: str
    solver_for: Callable[[str], nn.Module]
    """site name -> the solver network to test on that site."""


@dataclass
class PredictionOutput:
    """What a task's prediction writes: ``samples.csv`` and ``summary.csv`` rows, and files
    (pictures, volumes) under ``folder``."""

    folder: Path
    sample_header: list[str]
    summary_header: list[str]
    save_volumes: bool = False
    """Also write inputs, predictions and truths as NIfTI volumes (segmentation)."""
    sample_rows: list[list] = field(default_factory=list)
    summary_rows: list[list] = field(default_factory=list)


class Task(ABC):
    """The ML problem of a study, described by its sites' data.

    Args:
        config: the validated experiment; every site's :class:`DataSpec` comes from its
            dataset entry (no data is read).
    """

    matrix_metrics: ClassVar[tuple[str, ...]]
    """The metrics of the site matrix, the first being the headline one."""
    class_distributions: ClassVar[bool] = False
    """The model's outputs hold logits of a distribution over the classes along dim 1
    (softmax: segmentation, one class per image), so that distillation between two models'
    class distributions applies (LwF)."""
    label_maps: ClassVar[bool] = False
    """The targets are per-pixel label maps (segmentation), which relay's generators replay
    with their images."""
    loss_targets: ClassVar[tuple[str, ...]] = ()
    """What this task's losses may compare the logits with, matched against each loss's declared
    ``targets``: ``"class_indices"`` (one class per image or per pixel: ``ce``, ``focal``),
    ``"label_maps"`` (per-pixel label maps: ``dice``, ``dice_ce``, ``explog``),
    ``"label_vectors"`` (multi-hot labels with a mask: ``bce``), ``"patches"`` (masked image
    patches: ``masked_mse``). A loss that declares no ``targets``, and every loss of a task that
    declares none, is not checked."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.specs: dict[str, DataSpec] = {site.task_name: describe(site) for site in config.sites}
        first = self.specs[config.sites[0].task_name]
        self.in_channels: int = first.in_channels
        self.ignore_index: int | None = first.ignore_index
        self.image_size: tuple[int, ...] | None = first.image_size
        self.class_names: tuple[str, ...] = self.study_classes()

    def study_classes(self) -> tuple[str, ...]:
        """The model's output classes: the first site's classes (all sites must agree)."""
        first, *others = self.config.sites
        names = self.specs[first.task_name].class_names
        for site in others:
            spec = self.specs[site.task_name]
            if (spec.class_names, spec.in_channels) != (names, self.in_channels):
                raise ValueError(
                    f"site {site.task_name!r} has classes {spec.class_names} and {spec.in_channels} input channels, "
                    f"site {first.task_name!r} has {names} and {self.in_channels}: one model cannot serve both"
                )
        return names

    def build_model(self) -> nn.Module:
        """A new model of the configured architecture, sized by the data."""
        spec: Component = self.config.model
        kwargs = {"in_channels": self.in_channels, "num_classes": len(self.class_names), **spec.kwargs}
        if kwargs["num_classes"] != len(self.class_names) or kwargs["in_channels"] != self.in_channels:
            raise ValueError(
                f"common.model.kwargs: the model has in_channels={kwargs['in_channels']}, num_classes="
                f"{kwargs['num_classes']}, the data has {self.in_channels} channels and {len(self.class_names)} classes"
            )
        return MODELS.get(spec.name)(**kwargs)

    def build_loss(self, train: TrainConfig, train_sites: Sequence[SiteConfig] = ()) -> nn.Module:
        """The configured loss; ``train_sites`` are the sites whose training data it may
        need (a task fills data-derived options such as BCE's ``pos_weight: auto``). A loss
        whose class weights come from the training counts (a
        :class:`~siteflow.losses.class_balance.CountWeighted` loss with a ``weighting``, e.g.
        ``class_weights: balanced``) is built again with the weights of
        :meth:`class_counts` over ``train_sites``, when they are given."""
        loss = LOSSES.get(train.loss.name)(**train.loss.kwargs)
        if not isinstance(loss, CountWeighted) or loss.weighting is None:
            return loss
        counts = self.class_counts(train_sites)
        if counts is None:
            return loss
        return LOSSES.get(train.loss.name)(**{**train.loss.kwargs, "class_weights": loss.weights_for(counts)})

    def class_counts(self, train_sites: Sequence[SiteConfig]) -> list[int] | None:
        """Training samples of each class over ``train_sites`` (pooled), for losses weighted
        by the counts; None when no site is given. This task counts no classes: ValueError."""
        raise ValueError(
            f"kwargs.class_weights: weights from the training counts ('balanced', 'effective') are for one class "
            f"per image; the {type(self).__name__} does not count its classes: give one weight per class"
        )

    def write_data_summary(self, results_dir: Path) -> None:
        """Before training: write what a study needs to know about its data into the run's
        results (the classification task: how the sites were cut from one data set). Nothing
        by default."""

    def write_stage_outputs(self, results_dir: Path, rows: Sequence[StageResult], site_names: Sequence[str]) -> None:
        """With the site matrices: write the task's own files of the recorded test results
        ``rows`` (the classification task: a confusion matrix per site and stage). Nothing by
        default."""

    def dataset(self, sites: Sequence[SiteConfig], split: Split) -> Dataset:
        """The ``split`` of one site, or of several pooled (joint training), as the learner
        reads it."""
        return pooled_dataset(sites, split)

    @abstractmethod
    def learner(
        self,
        model: nn.Module,
        loss: nn.Module,
        train: TrainConfig,
        *,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> Learner:
        """The task's learner around ``model``."""

    @abstractmethod
    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """Evaluate ``model`` on ``site``'s test split sample by sample: add its rows to
        ``output`` and write the task's pictures into its folder."""

    @abstractmethod
    def prediction_output(self, folder: Path, *, save_volumes: bool = False) -> PredictionOutput:
        """Empty prediction tables with the task's headers, writing into ``folder``."""


def describe(site: SiteConfig) -> DataSpec:
    """What ``site``'s data looks like, from its config entry alone."""
    return DATASETS.get(site.dataset.name).describe(**site.dataset.kwargs)


def build_task(config: ExperimentConfig) -> Task:
    """The task that the model declares (its class attribute ``task``: ``mae_vit`` pre-trains
    on any images), else the one the first site's data declares (``DataSpec.task``)."""
    kind = getattr(MODELS.get(config.model.name), "task", None) or describe(config.sites[0]).task
    return TASKS.get(kind)(config)
