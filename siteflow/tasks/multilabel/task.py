"""Multi-label classification across sites whose label sets differ."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
from torch import nn
from torch.utils.data import Dataset

from siteflow.config import SiteConfig, TrainConfig
from siteflow.core.registry import LOSSES, TASKS
from siteflow.datasets.pooling import Split, build_dataset, pooled_dataset
from siteflow.tasks.base import ExtraLoss, ModelToTest, PredictionOutput, Task
from siteflow.tasks.multilabel.labels import UnionLabels, positive_weights
from siteflow.tasks.multilabel.learner import MultiLabelLearner
from siteflow.tasks.multilabel.prediction import add_site_rows, predict_scores


@TASKS.register("multilabel")
class MultiLabelTask(Task):
    """Findings per image; the model's outputs are the union of all sites' labels (the
    study's label space, in order of first appearance), every site's targets placed in it
    with a mask. The site matrix holds the mean AUROC over a site's labels."""

    matrix_metrics = ("auroc",)
    loss_targets = ("label_vectors",)

    def study_classes(self) -> tuple[str, ...]:
        names: list[str] = []
        for spec in self.specs.values():
            names.extend(name for name in spec.class_names if name not in names)
        return tuple(names)

    def build_loss(self, train: TrainConfig, train_sites: Sequence[SiteConfig] = ()) -> nn.Module:
        if train.loss.name != "bce":
            raise ValueError(f"common.train.loss.name: multi-label data needs the 'bce' loss, not {train.loss.name!r}")
        loss = super().build_loss(train, train_sites)
        if loss.auto_pos_weight and train_sites:  # the bce loss declares it
            parts = [UnionLabels(build_dataset(site, "train"), self.class_names) for site in train_sites]
            loss = LOSSES.get(train.loss.name)(**{**train.loss.kwargs, "pos_weight": positive_weights(parts)})
        return loss

    def dataset(self, sites: Sequence[SiteConfig], split: Split) -> Dataset:
        return pooled_dataset(sites, split, wrap=lambda part: UnionLabels(part, self.class_names))

    def learner(
        self,
        model: nn.Module,
        loss: nn.Module,
        train: TrainConfig,
        *,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> MultiLabelLearner:
        return MultiLabelLearner(
            model, loss, train=train, label_names=self.class_names, test_site_names=test_site_names, extra_losses=extra_losses
        )

    def prediction_output(self, folder: Path, *, save_volumes: bool = False) -> PredictionOutput:
        labels = self.class_names
        return PredictionOutput(
            folder,
            ["model", "site", "image_id", *(f"p_{name}" for name in labels), *(f"y_{name}" for name in labels)],
            ["model", "site", "label", "n", "auroc", "auroc_ci_low", "auroc_ci_high", "threshold_val", "sensitivity", "specificity"],
            save_volumes,
        )

    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """Per-label AUROC with bootstrap intervals, and sensitivity/specificity at the
        Youden threshold chosen on the site's validation split."""
        train = self.config.site_runs[0].train
        learner = self.learner(model.solver_for(site.task_name), self.build_loss(train), train)
        workers = self.config.num_workers
        val = predict_scores(trainer, learner, self.dataset([site], "val"), workers, train.batch_size)
        test = predict_scores(trainer, learner, self.dataset([site], "test"), workers, train.batch_size)
        add_site_rows(output, model.name, site.task_name, self.class_names, val, test)
