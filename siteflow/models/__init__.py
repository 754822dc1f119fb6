"""Network architectures; importing this package registers them in :data:`siteflow.core.registry.MODELS`.

Registered names: ``unet`` (:class:`UNet`), ``resnet_classifier`` (:class:`ResNetClassifier`).
"""

from siteflow.models.classifier import ResNetClassifier
from siteflow.models.resnet import ResNet
from siteflow.models.unet import UNet

__all__ = ["ResNet", "ResNetClassifier", "UNet"]
