"""Multi-label classification: the task, its learner, the union label space, predictions."""

from siteflow.tasks.multilabel.labels import UnionLabels, positive_weights
from siteflow.tasks.multilabel.learner import MultiLabelLearner
from siteflow.tasks.multilabel.task import MultiLabelTask

__all__ = ["MultiLabelLearner", "MultiLabelTask", "UnionLabels", "positive_weights"]
