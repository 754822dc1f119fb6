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
from torch.utils.data import Dataset

from siteflow.datasets.pooling import loader
from siteflow.metrics import bootstrap_confidence_interval, masked_auroc, sensitivity_specificity, youden_thresholds
from siteflow.tasks.base import PredictionOutput

BOOTSTRAP_RESAMPLES = 1000


def predict_scores(trainer: pl.Trainer, learner: pl.LightningModule, dataset: Dataset, num_workers: int, batch_size: int) -> dict:
    """Scores, labels and masks (N, L) and ids of every image of ``dataset``."""
    batches = trainer.predict(learner, dataloaders=loader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False))
    return {
        "scores": torch.cat([b["scores"] for b in batches]).double(),
        "labels": torch.cat([b["labels"] for b in batches]),
        "mask": torch.cat([b["mask"] for b in batches]),
        "id": [i for b in batches for i in b["id"]],
    }


def add_site_rows(output: PredictionOutput, model: str, site: str, labels: Sequence[str], val: dict, test: dict) -> None:
    """Add the rows of one model on one site: per-image scores, per-label AUROC with its
    bootstrap interval and the validation-chosen operating point, and the mean AUROC."""
    known = [column for column in range(len(labels)) if test["mask"][:, column].any()]
    thresholds = youden_thresholds(val["scores"], val["labels"], val["mask"])
    sensitivity, specificity = sensitivity_specificity(test["scores"], test["labels"], test["mask"], thresholds)
    for row, image_id in enumerate(test["id"]):
        output.sample_rows.append([
            model, site, image_id,
            *(float(test["scores"][row, c]) if c in known else "" for c in range(len(labels))),
            *(int(test["labels"][row, c]) if test["mask"][row, c] else "" for c in range(len(labels))),
        ])
    arrays = (test["scores"].numpy(), test["labels"].numpy(), test["mask"].numpy())
    for column in known:
        auroc = bootstrap_confidence_interval(mean_auroc_of([column]), *arrays, n_resamples=BOOTSTRAP_RESAMPLES)
        output.summary_rows.append([
            model, site, labels[column], int(test["mask"][:, column].sum()), *auroc,
            float(thresholds[column]), float(sensitivity[column]), float(specificity[column]),
        ])
    mean = bootstrap_confidence_interval(mean_auroc_of(known), *arrays, n_resamples=BOOTSTRAP_RESAMPLES)
    output.summary_rows.append([model, site, "mean", len(test["id"]), *mean, "", "", ""])


def mean_auroc_of(columns: Sequence[int]):
    """The statistic "mean AUROC over ``columns``" of numpy (scores, labels, mask) arrays."""

    def statistic(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
        values = masked_auroc(torch.from_numpy(scores[:, columns]), torch.from_numpy(labels[:, columns]), torch.from_numpy(mask[:, columns]))
        finite = values[torch.isfinite(values)]
        return finite.mean().item() if finite.numel() else float("nan")

    return statistic
