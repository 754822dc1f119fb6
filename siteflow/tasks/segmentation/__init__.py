"""Segmentation: the task, its learner and its sample-wise prediction outputs."""

from siteflow.tasks.segmentation.learner import SegmentationLearner
from siteflow.tasks.segmentation.task import SegmentationTask

__all__ = ["SegmentationLearner", "SegmentationTask"]
