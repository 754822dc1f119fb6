"""Network architectures; importing this package registers them in :data:`siteflow.core.registry.MODELS`.

Registered names: ``unet`` (:class:`UNet`), ``resnet_classifier`` (:class:`ResNetClassifier`),
``vit_classifier`` (:class:`ViTClassifier`), ``mae_vit`` (:class:`MaskedAutoencoderViT`) and ``unetr``
(:class:`UNETRSegmenter`), which share one ViT encoder (:mod:`siteflow.models.vit`); MONAI's
``densenet121`` (:class:`DenseNet121Classifier`) and ``efficientnet_b0`` (:class:`EfficientNetB0Classifier`).
"""

from siteflow.models.classifier import ResNetClassifier
from siteflow.models.mae import MaskedAutoencoderViT
from siteflow.models.monai_classifiers import DenseNet121Classifier, EfficientNetB0Classifier
from siteflow.models.resnet import ResNet
from siteflow.models.unet import UNet
from siteflow.models.unetr import UNETRSegmenter
from siteflow.models.vit_classifier import ViTClassifier

__all__ = [
    "DenseNet121Classifier",
    "EfficientNetB0Classifier",
    "MaskedAutoencoderViT",
    "ResNet",
    "ResNetClassifier",
    "UNETRSegmenter",
    "UNet",
    "ViTClassifier",
]
