"""Masked image modelling: self-supervised pre-training on any site's images."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from torch import nn
from torch.utils.data import Dataset

from siteflow.config import Component, SiteConfig, TrainConfig
from siteflow.core.registry import TASKS
from siteflow.datasets.pooling import Split, loader, pooled_dataset
from siteflow.datasets.sampling import takes_item_seeds
from siteflow.tasks.base import ExtraLoss, ModelToTest, PredictionOutput, Task
from siteflow.tasks.pretraining.learner import MaskedImageModellingLearner


class ImagesOnly(Dataset):
    """A site dataset's items without their labels: ``{"image": (C, *spatial) float, "id": str}``.

    Indices (and item seeds, for a dataset that takes them) pass through unchanged.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.takes_item_seeds = takes_item_seeds(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        item = self.dataset[index]
        return {"image": item["image"], "id": item["id"]}

    def preload(self) -> None:
        """The site dataset's decode cache, filled before a loader's workers start."""
        if hasattr(self.dataset, "preload"):
            self.dataset.preload()


@TASKS.register("masked_image_modelling")
class MaskedImageModellingTask(Task):
    """Self-supervised pre-training of a masked autoencoder on every site's images, whatever
    their data's labels (segmentation masks, findings, none); the model chooses this task
    (``mae_vit``'s ``task``). Every training image is read: a dataset's ``label_fraction``
    is lifted to 1. The site matrix holds the reconstruction loss on the masked patches of
    each site's test images (lower is better), under fixed masks.

    The images must have one size, the model's ``img_size``: the data's ``img_size`` (and no
    ``patch_size`` that differs from it).

    Args:
        config: the validated experiment, as for :class:`~siteflow.tasks.base.Task`; every
            site's dataset must set an ``img_size`` (and no other ``patch_size``), else
            ValueError naming the site.
    """

    matrix_metrics = ("reconstruction_loss",)
    loss_targets = ("patches",)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        for site, spec in self.specs.items():
            size = spec.image_size if spec.patch_size is None else spec.patch_size
            if size is None or size != spec.image_size:
                raise ValueError(
                    f"site {site!r}: masked image modelling trains and evaluates on images of one size: set the "
                    f"dataset's img_size (now {spec.image_size}) and no other patch_size (now {spec.patch_size})"
                )

    def study_classes(self) -> tuple[str, ...]:
        """No classes; every site's images must have the first site's channels."""
        first, *others = self.config.sites
        for site in others:
            if self.specs[site.task_name].in_channels != self.in_channels:
                raise ValueError(
                    f"site {site.task_name!r} has {self.specs[site.task_name].in_channels} input channels, "
                    f"site {first.task_name!r} has {self.in_channels}: one model cannot serve both"
                )
        return ()

    def build_model(self) -> nn.Module:
        """The configured model, whose ``img_size`` (where it has one) must be the data's."""
        model = super().build_model()
        model_size = tuple(getattr(getattr(model, "options", None), "img_size", self.image_size))
        if model_size != self.image_size:
            raise ValueError(f"common.model.kwargs.img_size is {list(model_size)}, the data's img_size {list(self.image_size)}")
        return model

    def build_loss(self, train: TrainConfig, train_sites: Sequence[SiteConfig] = ()) -> nn.Module:
        if train.loss.name != "masked_mse":
            raise ValueError(f"common.train.loss.name: masked image modelling needs the 'masked_mse' loss, not {train.loss.name!r}")
        return super().build_loss(train, train_sites)

    def dataset(self, sites: Sequence[SiteConfig], split: Split) -> Dataset:
        return pooled_dataset([every_image(site) for site in sites], split, wrap=ImagesOnly)

    def learner(
        self,
        model: nn.Module,
        loss: nn.Module,
        train: TrainConfig,
        *,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> MaskedImageModellingLearner:
        return MaskedImageModellingLearner(model, loss, train=train, test_site_names=test_site_names, extra_losses=extra_losses)

    def prediction_output(self, folder: Path, *, save_volumes: bool = False) -> PredictionOutput:
        return PredictionOutput(
            folder, ["model", "site", "image_id", "reconstruction_loss"], ["model", "site", "n", "reconstruction_loss"], save_volumes
        )

    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """One row per test image (its reconstruction loss), and the site's mean."""
        train = self.config.site_runs[0].train
        learner = self.learner(model.solver_for(site.task_name), self.build_loss(train), train)
        data = loader(self.dataset([site], "test"), batch_size=train.batch_size, num_workers=self.config.num_workers, shuffle=False)
        rows = [
            [model.name, site.task_name, image_id, float(loss)]
            for batch in trainer.predict(learner, dataloaders=data)
            for image_id, loss in zip(batch["id"], batch["loss"])
        ]
        output.sample_rows.extend(rows)
        output.summary_rows.append([model.name, site.task_name, len(rows), sum(row[3] for row in rows) / len(rows)])


def every_image(site: SiteConfig) -> SiteConfig:
    """``site`` with its dataset's ``label_fraction`` (where set) lifted to 1: pre-training
    reads every training image."""
    kwargs = site.dataset.kwargs
    if kwargs.get("label_fraction", 1.0) == 1.0:
        return site
    return dataclasses.replace(site, dataset=Component(site.dataset.name, {**kwargs, "label_fraction": 1.0}))
