"""A site's multi-label targets placed in the study's label space (the union of all sites').

Every site annotates its own findings. siteflow trains one classifier over the union of all
sites' findings; a sample's targets are expanded to that union with a mask that is 0 for the
findings its site does not annotate, so the masked loss and the AUROC only ever see known
labels. Keeping the classifier's head at each site (FFL) then amounts to one head per site's
label set; sharing it gives the union-head variant.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset


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
