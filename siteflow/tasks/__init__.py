"""The ML problems siteflow trains; importing this package registers them in
:data:`siteflow.core.registry.TASKS` (``segmentation``, ``multilabel``,
``classification``, ``masked_image_modelling``)."""

from siteflow.tasks.base import ExtraLoss, Learner, ModelToTest, PredictionOutput, Task, build_task
from siteflow.tasks.classification import ClassificationLearner, ClassificationTask
from siteflow.tasks.multilabel import MultiLabelLearner, MultiLabelTask
from siteflow.tasks.pretraining import MaskedImageModellingLearner, MaskedImageModellingTask
from siteflow.tasks.segmentation import SegmentationLearner, SegmentationTask

__all__ = [
    "ClassificationLearner",
    "ClassificationTask",
    "ExtraLoss",
    "Learner",
    "MaskedImageModellingLearner",
    "MaskedImageModellingTask",
    "ModelToTest",
    "MultiLabelLearner",
    "MultiLabelTask",
    "PredictionOutput",
    "SegmentationLearner",
    "SegmentationTask",
    "Task",
    "build_task",
]
