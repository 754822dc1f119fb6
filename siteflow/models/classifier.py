"""Image-level classification: a ResNet trunk and a linear head."""

import torch
from torch import nn

from siteflow.models.blocks import NormKind
from siteflow.models.resnet import ResNet, ResNetDepth
from siteflow.core.registry import MODELS


@MODELS.register("resnet_classifier")
class ResNetClassifier(nn.Module):
    """ResNet classifier: (N, in_channels, *S) -> logits (N, num_classes).

    The pooled trunk features (N, trunk.out_features) pass through dropout and the linear
    ``head``. ``trunk`` and ``head`` are separate submodules so heads can be swapped per site.

    Args:
        in_channels: channels of the input image.
        num_classes: number of output logits.
        depth: ResNet depth, 18, 34 or 50.
        spatial_dims: 2 for images, 3 for volumes.
        dropout: dropout probability on the pooled features (0 disables it).
        norm: the trunk's normalisation (``group`` or ``instance`` for DP-SGD, which cannot
            train batch norm).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        depth: ResNetDepth = 18,
        spatial_dims: int = 2,
        dropout: float = 0.0,
        norm: NormKind = "batch",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.trunk = ResNet(in_channels, depth, spatial_dims=spatial_dims, norm=norm)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.trunk.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *S) -> logits (N, num_classes)."""
        return self.head(self.dropout(self.trunk(x)))
