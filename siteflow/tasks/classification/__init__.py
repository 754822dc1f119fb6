"""Multi-class classification (one class per image): the task, its learner, its pictures."""

from siteflow.tasks.classification.learner import ClassificationLearner
from siteflow.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationLearner", "ClassificationTask"]
