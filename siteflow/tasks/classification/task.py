"""Multi-class classification: one label out of several per image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from siteflow.config import SiteConfig, TrainConfig
from siteflow.core.atomic import safe_name, write_json
from siteflow.core.registry import TASKS
from siteflow.core.site_matrix import StageResult
from siteflow.datasets.pooling import build_dataset, loader
from siteflow.metrics.multiclass import SCORES, bootstrap_scores, confusion_from_scores, confusion_matrix
from siteflow.tasks.base import ExtraLoss, ModelToTest, PredictionOutput, Task
from siteflow.tasks.classification.learner import ClassificationLearner
from siteflow.tasks.classification.pictures import plot_class_counts, write_confusion

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 1000
PARTITION_FILE = "partition.json"


@TASKS.register("classification")
class ClassificationTask(Task):
    """One class per image (the data's ``class_names``, every site the same). The model maps
    images to logits (N, K), a distribution over the classes through softmax. The site matrix
    holds balanced accuracy (the headline, FLamby's Fed-ISIC2019 metric), accuracy, macro F1,
    macro one-vs-rest AUROC and quadratic kappa; each stage's test also writes a confusion
    matrix per site (``results/confusion/<stage>/<site>.csv/.png``). Losses weighted by the
    training class counts (``class_weights: balanced | effective``) get the counts of the
    sites that train."""

    matrix_metrics = SCORES[1:2] + SCORES[:1] + SCORES[2:]
    loss_targets = ("class_indices",)
    class_distributions = True

    def class_counts(self, train_sites: Sequence[SiteConfig]) -> list[int] | None:
        if not train_sites:
            return None
        total = np.zeros(len(self.class_names), dtype=np.int64)
        for site in train_sites:
            total += np.asarray(build_dataset(site, "train").class_counts())
        return total.tolist()

    def learner(
        self,
        model: nn.Module,
        loss: nn.Module,
        train: TrainConfig,
        *,
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> ClassificationLearner:
        return ClassificationLearner(
            model, loss, train=train, class_names=self.class_names, test_site_names=test_site_names, extra_losses=extra_losses
        )

    def write_stage_outputs(self, results_dir: Path, rows: Sequence[StageResult], site_names: Sequence[str]) -> None:
        """The confusion matrix of every stage on every site it was tested on."""
        for row in rows:
            for site, values in row.values.items():
                confusion = confusion_from_scores(values, len(self.class_names))
                if confusion is not None:
                    path = results_dir / "confusion" / safe_name(row.stage) / safe_name(site)
                    write_confusion(path, confusion, self.class_names, f"after {row.stage}, tested on {site}")

    def write_data_summary(self, results_dir: Path) -> None:
        """``results/partition.json`` and ``partition.png`` when the sites are cut from one
        data set (their dataset has a ``partition``): the partition's options, and for every
        site here its part, the class counts of each split and the ids of its images, so
        that the study can be repeated exactly and the split inspected."""
        sites = {}
        options = None
        for site in self.config.sites:
            if not site.available or site.dataset.kwargs.get("partition") is None:
                continue
            splits = {split: build_dataset(site, split) for split in ("train", "val", "test")}
            options = splits["train"].partition.describe()
            sites[site.task_name] = {
                "dataset": site.dataset.name,
                "part": site.dataset.kwargs.get("part"),
                "counts": {split: dict(zip(self.class_names, data.class_counts())) for split, data in splits.items()},
                "ids": {split: data.sample_ids for split, data in splits.items()},
            }
        if not sites:
            return
        write_json(results_dir / PARTITION_FILE, {"partition": options, "classes": list(self.class_names), "sites": sites})
        counts = {name: [entry["counts"]["train"][c] for c in self.class_names] for name, entry in sites.items()}
        plot_class_counts(results_dir / "partition.png", counts, self.class_names, f"partition: {options}")

    def prediction_output(self, folder: Path, *, save_volumes: bool = False) -> PredictionOutput:
        return PredictionOutput(
            folder,
            ["model", "site", "image_id", *(f"p_{name}" for name in self.class_names), "label", "pred"],
            ["model", "site", "metric", "n", "value", "ci_low", "ci_high"],
            save_volumes,
        )

    def predict(self, model: ModelToTest, site: SiteConfig, trainer: pl.Trainer, output: PredictionOutput) -> None:
        """Per test image its class probabilities, true and predicted class; per site each
        score of :data:`~siteflow.metrics.multiclass.SCORES` with its percentile-bootstrap
        95% interval over the images, and the confusion matrix
        (``confusion/<model>/<site>.csv/.png``)."""
        train = self.config.site_runs[0].train
        learner = self.learner(model.solver_for(site.task_name), self.build_loss(train), train)
        data = loader(self.dataset([site], "test"), batch_size=train.batch_size, num_workers=self.config.num_workers, shuffle=False)
        batches = trainer.predict(learner, dataloaders=data)
        probabilities = torch.cat([b["probabilities"] for b in batches]).double()
        labels = torch.cat([b["label"] for b in batches])
        ids = [i for b in batches for i in b["id"]]
        predicted = probabilities.argmax(1)
        for row, image_id in enumerate(ids):
            output.sample_rows.append([
                model.name, site.task_name, image_id, *(float(p) for p in probabilities[row]),
                self.class_names[labels[row]], self.class_names[predicted[row]],
            ])
        scores = bootstrap_scores(probabilities, labels, self.class_names, n_resamples=BOOTSTRAP_RESAMPLES)
        for score, (value, low, high) in scores.items():
            output.summary_rows.append([model.name, site.task_name, score, len(ids), value, low, high])
        confusion = confusion_matrix(predicted, labels, len(self.class_names))
        path = output.folder / "confusion" / safe_name(model.name) / safe_name(site.task_name)
        write_confusion(path, confusion, self.class_names, f"{model.name} on {site.task_name}")
        log.info("%s on %s: balanced accuracy %.4f", model.name, site.task_name, scores["balanced_accuracy"][0])
