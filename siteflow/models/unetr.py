"""UNETR (Hatamizadeh et al., 2022): segmentation with the shared ViT encoder and a
convolutional decoder fed by the encoder's intermediate tokens."""

from __future__ import annotations

from typing import Any, Literal

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

from siteflow.core.registry import MODELS
from siteflow.models.vit import FineTunedViT

UNETR_PATCH = 16
"""The patch side UNETR's decoder expects: it upsamples the tokens 4 times by 2."""


@MODELS.register("unetr")
class UNETRSegmenter(FineTunedViT):
    """UNETR: images (N, in_channels, *img_size) -> logits (N, num_classes, *img_size).

    MONAI's UNETR blocks around the shared encoder ``vit`` (so a pre-trained encoder loads by
    name): the tokens of blocks ``num_layers * k // 4`` (k = 1, 2, 3; blocks 3, 6 and 9 of
    12, as in the paper) and the final tokens are reshaped to feature maps (N, hidden_size,
    *img_size / 16) and upsampled to skip connections of ``feature_size * 2**j`` channels;
    the input itself is the first skip. Unlike MONAI's ``UNETR``, the encoder's depth is
    configurable.

    Args:
        in_channels, num_classes: from the data (not set in the config).
        feature_size: channels of the decoder's finest level.
        norm_name: the decoder's normalisation.
        res_block: residual convolution blocks in the decoder.
        **kwargs: the fine-tuning options and the encoder's (``patch_size`` must be 16, and
            ``num_layers`` at least 3); see :class:`~siteflow.models.vit.FineTunedViT`.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        feature_size: int = 16,
        norm_name: Literal["instance", "batch"] = "instance",
        res_block: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, **kwargs)
        options = self.options
        if options.patch_size != UNETR_PATCH:
            raise ValueError(f"patch_size must be {UNETR_PATCH} for unetr (its decoder upsamples 4 times by 2), not {options.patch_size}")
        if options.num_layers < 3:
            raise ValueError(f"num_layers must be at least 3 for unetr (it takes skips from 3 depths), not {options.num_layers}")
        if feature_size < 1:
            raise ValueError(f"feature_size must be at least 1, not {feature_size}")
        dims, hidden = options.spatial_dims, options.hidden_size
        common = {"spatial_dims": dims, "norm_name": norm_name, "res_block": res_block}
        self.skip_blocks = tuple(options.num_layers * k // 4 for k in (1, 2, 3))
        self.encoder1 = UnetrBasicBlock(in_channels=in_channels, out_channels=feature_size, kernel_size=3, stride=1, **common)
        self.encoder2 = UnetrPrUpBlock(
            in_channels=hidden, out_channels=feature_size * 2, num_layer=2, kernel_size=3, stride=1,
            upsample_kernel_size=2, conv_block=True, **common,
        )
        self.encoder3 = UnetrPrUpBlock(
            in_channels=hidden, out_channels=feature_size * 4, num_layer=1, kernel_size=3, stride=1,
            upsample_kernel_size=2, conv_block=True, **common,
        )
        self.encoder4 = UnetrPrUpBlock(
            in_channels=hidden, out_channels=feature_size * 8, num_layer=0, kernel_size=3, stride=1,
            upsample_kernel_size=2, conv_block=True, **common,
        )
        self.decoder5 = UnetrUpBlock(in_channels=hidden, out_channels=feature_size * 8, kernel_size=3, upsample_kernel_size=2, **common)
        self.decoder4 = UnetrUpBlock(in_channels=feature_size * 8, out_channels=feature_size * 4, kernel_size=3, upsample_kernel_size=2, **common)
        self.decoder3 = UnetrUpBlock(in_channels=feature_size * 4, out_channels=feature_size * 2, kernel_size=3, upsample_kernel_size=2, **common)
        self.decoder2 = UnetrUpBlock(in_channels=feature_size * 2, out_channels=feature_size, kernel_size=3, upsample_kernel_size=2, **common)
        self.out = UnetOutBlock(spatial_dims=dims, in_channels=feature_size, out_channels=num_classes)
        self.start_from_pretrained()

    def feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (N, L, hidden_size) -> a feature map (N, hidden_size, *grid)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.options.grid)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *img_size) -> logits (N, num_classes, *img_size)."""
        tokens, hidden = self.vit(images)
        first, second, third = (hidden[index] for index in self.skip_blocks)
        skip1 = self.encoder1(images)
        skip2 = self.encoder2(self.feature_map(first))
        skip3 = self.encoder3(self.feature_map(second))
        skip4 = self.encoder4(self.feature_map(third))
        x = self.decoder5(self.feature_map(tokens), skip4)
        x = self.decoder4(x, skip3)
        x = self.decoder3(x, skip2)
        return self.out(self.decoder2(x, skip1))
