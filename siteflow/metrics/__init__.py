"""Segmentation and multi-label classification metrics (torchmetrics API), confidence intervals."""

from siteflow.metrics.classification import (
    MultiLabelAUROC,
    masked_auroc,
    sensitivity_specificity,
    youden_thresholds,
)
from siteflow.metrics.confusion import Confusion, confusion_counts, dice_from_confusion, overlap_scores
from siteflow.metrics.dice import PooledDice, PooledOverlap, SampleDice
from siteflow.metrics.hausdorff import HD95, hd95
from siteflow.metrics.per_sample import PerSampleMetric
from siteflow.metrics.statistics import (
    PairedTest,
    bootstrap_confidence_interval,
    holm_adjust,
    mean_confidence_interval,
    paired_bootstrap_test,
    wilcoxon_signed_rank,
)

__all__ = [
    "HD95",
    "Confusion",
    "PairedTest",
    "MultiLabelAUROC",
    "PerSampleMetric",
    "PooledDice",
    "PooledOverlap",
    "SampleDice",
    "bootstrap_confidence_interval",
    "holm_adjust",
    "confusion_counts",
    "dice_from_confusion",
    "hd95",
    "masked_auroc",
    "mean_confidence_interval",
    "overlap_scores",
    "paired_bootstrap_test",
    "sensitivity_specificity",
    "wilcoxon_signed_rank",
    "youden_thresholds",
]
