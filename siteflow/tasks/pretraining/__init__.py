"""Self-supervised pre-training: masked image modelling on a site's images, labels unused."""

from siteflow.tasks.pretraining.learner import MaskedImageModellingLearner
from siteflow.tasks.pretraining.task import ImagesOnly, MaskedImageModellingTask

__all__ = ["ImagesOnly", "MaskedImageModellingLearner", "MaskedImageModellingTask"]
