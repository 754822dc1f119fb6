"""Sample-wise evaluation of multi-label classifiers (``predict_test.py`` on classification runs).

Per model and test site, for every label the site annotates: AUROC with a percentile-bootstrap
95% confidence interval over the test images, and sensitivity and specificity at the threshold
that maximises Youden's J on the site's **validation** split (never on the test split); and
the same for the mean AUROC over the site's labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from siteflow.core.atomic import load_weights
from siteflow.datasets.pooling import loader
from siteflow.metrics import bootstrap_confidence_interval, masked_auroc, sensitivity_specificity, youden_thresholds

BOOTSTRAP_RESAMPLES = 1000


def evaluate_multilabel(run, models, trainer: pl.Trainer) -> tuple[list[str], list[list], list[str], list[list]]:
    """(samples header, sample rows, summary header, summary rows) for ``models`` on every
    available test site of ``run``."""
    labels = list(run.class_names)
    train = run.config.tasks[0].train
    sample_rows, summary_rows = [], []
    for model in models:
        for site in (site for site in run.config.sites if site.available):
            learner = run.learner(run.solver_from(load_weights(model.weights_for(site.task_name))), train)
            val = _predict(trainer, learner, run.dataset(site, "val"), run.config.num_workers, train.batch_size)
            test = _predict(trainer, learner, run.dataset(site, "test"), run.config.num_workers, train.batch_size)
            known = [column for column in range(len(labels)) if test["mask"][:, column].any()]
            thresholds = youden_thresholds(val["scores"], val["labels"], val["mask"])
            sensitivity, specificity = sensitivity_specificity(test["scores"], test["labels"], test["mask"], thresholds)
            for row, image_id in enumerate(test["id"]):
                sample_rows.append([
                    model.name, site.task_name, image_id,
                    *(float(test["scores"][row, c]) if c in known else "" for c in range(len(labels))),
                    *(int(test["labels"][row, c]) if test["mask"][row, c] else "" for c in range(len(labels))),
                ])
            arrays = (test["scores"].numpy(), test["labels"].numpy(), test["mask"].numpy())
            for column in known:
                auroc = bootstrap_confidence_interval(_auroc_of([column]), *arrays, n_resamples=BOOTSTRAP_RESAMPLES)
                summary_rows.append([
                    model.name, site.task_name, labels[column], int(test["mask"][:, column].sum()), *auroc,
                    float(thresholds[column]), float(sensitivity[column]), float(specificity[column]),
                ])
            mean = bootstrap_confidence_interval(_auroc_of(known), *arrays, n_resamples=BOOTSTRAP_RESAMPLES)
            summary_rows.append([model.name, site.task_name, "mean", len(test["id"]), *mean, "", "", ""])
    sample_header = ["model", "site", "image_id", *(f"p_{name}" for name in labels), *(f"y_{name}" for name in labels)]
    summary_header = ["model", "site", "label", "n", "auroc", "auroc_ci_low", "auroc_ci_high", "threshold_val",
                      "sensitivity", "specificity"]
    return sample_header, sample_rows, summary_header, summary_rows


def _auroc_of(columns: Sequence[int]):
    """The statistic "mean AUROC over ``columns``" of numpy (scores, labels, mask) arrays."""

    def statistic(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
        values = masked_auroc(torch.from_numpy(scores[:, columns]), torch.from_numpy(labels[:, columns]), torch.from_numpy(mask[:, columns]))
        finite = values[torch.isfinite(values)]
        return finite.mean().item() if finite.numel() else float("nan")

    return statistic


def _predict(trainer: pl.Trainer, learner: pl.LightningModule, dataset, num_workers: int, batch_size: int) -> dict:
    """Scores, labels and masks (N, L) and ids of every image of ``dataset``."""
    batches = trainer.predict(learner, dataloaders=loader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False))
    return {
        "scores": torch.cat([b["scores"] for b in batches]).double(),
        "labels": torch.cat([b["labels"] for b in batches]),
        "mask": torch.cat([b["mask"] for b in batches]),
        "id": [i for b in batches for i in b["id"]],
    }
