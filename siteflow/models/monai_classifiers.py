"""MONAI's ImageNet-family classifiers, randomly initialised (nothing is downloaded): DenseNet-121
and EfficientNet-B0, as a ``trunk`` (image -> pooled features) and a linear ``head``, the
layout of the other classifiers (FedPer's ``personal_layers: [head]`` keeps the head at the
sites)."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet121, EfficientNetBN
from torch import nn

from siteflow.core.registry import MODELS


def _take_head(owner: nn.Module, name: str) -> nn.Linear:
    """The final linear layer ``owner.<name>`` of a network, replaced there by the identity
    (the network then returns its pooled features)."""
    head = getattr(owner, name)
    setattr(owner, name, nn.Identity())
    return head


@MODELS.register("densenet121")
class DenseNet121Classifier(nn.Module):
    """MONAI's DenseNet-121 (:class:`monai.networks.nets.DenseNet121`, ``pretrained=False``):
    (N, in_channels, *S) -> logits (N, num_classes).

    ``trunk`` is the dense blocks, the final ReLU and the global average pooling, giving
    (N, 1024); ``head`` the linear layer. Five halvings of the size: images of at least 32
    pixels a side (32 x 32 images end as 1 x 1 maps). Batch norm throughout (not for DP-SGD).

    Args:
        in_channels: channels of the input image.
        num_classes: number of output logits.
        spatial_dims: 2 for images, 3 for volumes.
        dropout: dropout probability after every dense layer (MONAI's ``dropout_prob``; 0
            disables it).
    """

    def __init__(self, in_channels: int, num_classes: int, *, spatial_dims: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        network = DenseNet121(spatial_dims, in_channels, num_classes, pretrained=False, dropout_prob=dropout)
        head = _take_head(network.class_layers, "out")
        self.trunk, self.head = network, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *S) -> logits (N, num_classes)."""
        if min(x.shape[2:]) < 32:
            raise ValueError(f"densenet121 needs images of at least 32 pixels a side (five halvings), got {tuple(x.shape[2:])}")
        return self.head(self.trunk(x))


@MODELS.register("efficientnet_b0")
class EfficientNetB0Classifier(nn.Module):
    """MONAI's EfficientNet-B0 (:class:`monai.networks.nets.EfficientNetBN`,
    ``"efficientnet-b0"``, ``pretrained=False``): (N, in_channels, *S) -> logits (N, num_classes).

    ``trunk`` is the stem, the MBConv blocks, the 1x1 head convolution, global average pooling
    and B0's dropout (0.2), giving (N, 1280); ``head`` the linear layer. MONAI fixes the "same"
    paddings for B0's 224-pixel images; they are the same for every side that is a multiple of
    32 (even before each of the five halvings), and only such sides are accepted (32 x 32
    images end as 1 x 1 maps). Batch norm throughout (not for DP-SGD).

    Args:
        in_channels: channels of the input image.
        num_classes: number of output logits.
        spatial_dims: 2 for images, 3 for volumes.
    """

    def __init__(self, in_channels: int, num_classes: int, *, spatial_dims: int = 2) -> None:
        super().__init__()
        network = EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes
        )
        head = _take_head(network, "_fc")
        self.trunk, self.head = network, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *S) -> logits (N, num_classes)."""
        if any(side % 32 for side in x.shape[2:]):
            raise ValueError(f"efficientnet_b0 needs image sides that are multiples of 32, got {tuple(x.shape[2:])}")
        return self.head(self.trunk(x))
