"""Image-level classification with a vision transformer: the shared ViT encoder and a linear head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from siteflow.core.registry import MODELS
from siteflow.models.vit import FineTunedViT


@MODELS.register("vit_classifier")
class ViTClassifier(FineTunedViT):
    """ViT classifier: images (N, in_channels, *img_size) -> logits (N, num_classes).

    The encoder's tokens (N, L, hidden_size), after its final layer norm, are averaged over
    the tokens (global average pooling, as MAE fine-tunes), pass through dropout and the
    linear ``head`` (kept apart so that heads can stay at the sites).

    Args:
        in_channels, num_classes: from the data (not set in the config).
        dropout: dropout probability on the pooled features (0 disables it).
        **kwargs: the fine-tuning options (``pretrained``, ``freeze_encoder``,
            ``layer_decay``) and the encoder's (:class:`~siteflow.models.vit.ViTOptions`);
            see :class:`~siteflow.models.vit.FineTunedViT`.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(in_channels, **kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.options.hidden_size, num_classes)
        self.start_from_pretrained()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *img_size) -> logits (N, num_classes)."""
        tokens, _ = self.vit(images)
        return self.head(self.dropout(tokens.mean(dim=1)))
