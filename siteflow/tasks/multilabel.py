"""Multi-label classification across sites whose label sets differ.

Every site annotates its own findings. siteflow trains one classifier over the union of all
sites' findings; a sample's targets are expanded to that union with a mask that is 0 for the
findings its site does not annotate, so the masked loss and the AUROC only ever see known
labels. Keeping the classifier's head at each site (FFL) then amounts to one head per site's
label set; sharing it gives the union-head variant.
"""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from siteflow.config import TrainConfig
from siteflow.tasks.learner import ExtraLoss, configure_optimization
from siteflow.metrics import MultiLabelAUROC

Batch = dict  # {"image": (N, C, H, W), "labels": (N, L) float, "mask": (N, L) float, "id": list[str]}


class UnionLabels(Dataset):
    """A site's multi-label dataset with its labels placed in the union of all sites' labels.

    Items: ``labels`` and ``mask`` become (L_union,); findings the site does not annotate have
    label 0 and mask 0.
    """

    def __init__(self, dataset: Dataset, label_space: Sequence[str]) -> None:
        missing = [name for name in dataset.label_names if name not in label_space]
        if missing:
            raise ValueError(f"labels {missing} are not in the study's label space {list(label_space)}")
        self.dataset = dataset
        self.columns = torch.tensor([list(label_space).index(name) for name in dataset.label_names], dtype=torch.long)
        self.size = len(label_space)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        labels = torch.zeros(self.size)
        mask = torch.zeros(self.size)
        labels[self.columns] = item["labels"]
        mask[self.columns] = item["mask"]
        item["labels"], item["mask"] = labels, mask
        return item


def positive_weights(datasets: Sequence[UnionLabels]) -> list[float]:
    """BCE ``pos_weight`` per union label, ``(N - P) / P`` over the known entries of the
    (pooled) training sets; 1 for a label without positives."""
    positives = torch.zeros(datasets[0].size, dtype=torch.float64)
    known = torch.zeros(datasets[0].size, dtype=torch.float64)
    for dataset in datasets:
        site_positives, site_known = dataset.dataset.positive_counts()
        positives[dataset.columns] += site_positives.double()
        known[dataset.columns] += site_known.double()
    ratio = (known - positives) / positives.clamp_min(1.0)
    return torch.where(positives > 0, ratio, torch.ones_like(ratio)).tolist()


class MultiLabelLearner(pl.LightningModule):
    """Classifier + masked BCE + per-label AUROC, trained by a Lightning ``Trainer``.

    Args:
        model: images (N, C, H, W) -> logits (N, L) over the union of labels.
        loss: (logits, targets, mask) -> scalar (``MaskedBCEWithLogitsLoss``).
        train: optimizer, scheduler and logging settings.
        label_names: the union of labels, in the model's output order.
        test_site_names: the name of each test dataloader.
        extra_losses: callables added to the loss of every training step.
    """

    matrix_metrics = ("auroc",)

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        train: TrainConfig,
        label_names: Sequence[str],
        test_site_names: Sequence[str] = (),
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.train_config = train
        self.label_names = tuple(label_names)
        self.test_site_names = tuple(test_site_names)
        self.extra_losses = list(extra_losses)
        self.val_auroc = MultiLabelAUROC()
        self.test_auroc = nn.ModuleList(MultiLabelAUROC() for _ in self.test_site_names)
        self.test_results: dict[str, dict[str, float]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["labels"], batch["mask"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        for term in self.extra_losses:
            loss = loss + term(self)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["labels"], batch["mask"]), prog_bar=True, batch_size=len(logits))
        self.val_auroc.update(logits.sigmoid(), batch["labels"], batch["mask"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/auroc", _nanmean(self.val_auroc.compute()), prog_bar=True)
        self.val_auroc.reset()

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_auroc[dataloader_idx].update(self(batch["image"]).sigmoid(), batch["labels"], batch["mask"])

    def on_test_epoch_end(self) -> None:
        self.test_results = {}
        for site, metric in zip(self.test_site_names, self.test_auroc):
            per_label = metric.compute()
            result = {"auroc": _nanmean(per_label)}
            result.update({f"auroc_{name}": value.item() for name, value in zip(self.label_names, per_label) if value == value})
            self.test_results[site] = result
            metric.reset()

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Batch:
        """The batch with ``"scores"``: sigmoid probabilities (N, L), all on the CPU."""
        return {"scores": self(batch["image"]).sigmoid().cpu(), "labels": batch["labels"].cpu(),
                "mask": batch["mask"].cpu(), "id": batch["id"]}

    def configure_optimizers(self):
        return configure_optimization(self.train_config, self.parameters())


def _nanmean(values: torch.Tensor) -> float:
    """Mean over the finite values (labels a site can score), NaN if there are none."""
    finite = values[torch.isfinite(values)]
    return finite.mean().item() if finite.numel() else float("nan")
