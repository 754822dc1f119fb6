"""ResNet trunks (He et al., 2016) for 2D images and 3D volumes, randomly initialised.

Depth 18 and 34 stack basic blocks (two 3x3 convolutions), depth 50 stacks bottleneck blocks
(1x1 reduce, 3x3, 1x1 expand by 4, stride on the 3x3 convolution). With 3 input channels and
2 spatial dimensions the trunks have exactly the parameters of torchvision's ``resnet18/34/50``
without the final fully connected layer.
"""

from typing import Literal

import torch
from torch import nn

from siteflow.models import blocks
from siteflow.models.blocks import NormKind

ResNetDepth = Literal[18, 34, 50]

#: Channels of the stem convolution.
STEM_CHANNELS = 64
#: Width (channels of the 3x3 convolutions) of the four stages.
STAGE_WIDTHS = (64, 128, 256, 512)
#: Downsampling factor of each level of :meth:`ResNet.forward_features`.
FEATURE_STRIDES = (2, 4, 8, 16, 32)

BlockKind = Literal["basic", "bottleneck"]
#: Block kind and number of blocks per stage, by depth.
LAYOUTS: dict[int, tuple[BlockKind, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
#: Output channels of a block divided by its width.
EXPANSION: dict[str, int] = {"basic": 1, "bottleneck": 4}


class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``: (N, C_in, *S) -> (N, C_out, *ceil(S / stride)).

    The last layer of ``branch`` is a normalisation layer (the one zeroed by
    ``zero_init_residual``).
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


def _basic_branch(
    spatial_dims: int, in_channels: int, width: int, stride: int, norm: NormKind
) -> nn.Sequential:
    return nn.Sequential(
        blocks.conv(spatial_dims, in_channels, width, 3, stride),
        blocks.norm(norm, spatial_dims, width),
        nn.ReLU(inplace=True),
        blocks.conv(spatial_dims, width, width, 3),
        blocks.norm(norm, spatial_dims, width),
    )


def _bottleneck_branch(
    spatial_dims: int, in_channels: int, width: int, stride: int, norm: NormKind
) -> nn.Sequential:
    out_channels = width * EXPANSION["bottleneck"]
    return nn.Sequential(
        blocks.conv(spatial_dims, in_channels, width, 1),
        blocks.norm(norm, spatial_dims, width),
        nn.ReLU(inplace=True),
        blocks.conv(spatial_dims, width, width, 3, stride),
        blocks.norm(norm, spatial_dims, width),
        nn.ReLU(inplace=True),
        blocks.conv(spatial_dims, width, out_channels, 1),
        blocks.norm(norm, spatial_dims, out_channels),
    )


_BRANCHES = {"basic": _basic_branch, "bottleneck": _bottleneck_branch}


def residual_block(
    kind: BlockKind, spatial_dims: int, in_channels: int, width: int, stride: int, norm: NormKind
) -> ResidualBlock:
    """One block; the shortcut is a strided 1x1 convolution + norm when the shape changes."""
    out_channels = width * EXPANSION[kind]
    if stride == 1 and in_channels == out_channels:
        shortcut: nn.Module = nn.Identity()
    else:
        shortcut = nn.Sequential(
            blocks.conv(spatial_dims, in_channels, out_channels, 1, stride),
            blocks.norm(norm, spatial_dims, out_channels),
        )
    branch = _BRANCHES[kind](spatial_dims, in_channels, width, stride, norm)
    return ResidualBlock(branch, shortcut)


class ResNet(nn.Module):
    """ResNet trunk: stem (7x7 stride-2 conv, norm, ReLU), 3x3 stride-2 max pool, four stages.

    Args:
        in_channels: channels C of the input (N, C, *S), S being 2 or 3 spatial sizes.
        depth: 18, 34 or 50.
        spatial_dims: 2 for images, 3 for volumes.
        norm: normalisation after every convolution.
        zero_init_residual: start the last norm of every residual branch at weight 0, so each
            block starts as (ReLU of) its shortcut.

    Attributes:
        feature_channels: channels of the five levels of :meth:`forward_features`.
        feature_strides: their downsampling factors, ``(2, 4, 8, 16, 32)``.
        out_features: length of the pooled vector returned by :meth:`forward`.
    """

    def __init__(
        self,
        in_channels: int,
        depth: ResNetDepth = 18,
        *,
        spatial_dims: int = 2,
        norm: NormKind = "batch",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        blocks.check_spatial_dims(spatial_dims)
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}")
        kind, blocks_per_stage = LAYOUTS[depth]

        self.stem = nn.Sequential(
            blocks.conv(spatial_dims, in_channels, STEM_CHANNELS, 7, stride=2),
            blocks.norm(norm, spatial_dims, STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.pool = blocks.max_pool(spatial_dims, 3, stride=2, padding=1)

        stages = []
        channels = STEM_CHANNELS
        for stage_index, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
            stage = []
            for block_index in range(num_blocks):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                stage.append(residual_block(kind, spatial_dims, channels, width, stride, norm))
                channels = width * EXPANSION[kind]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)

        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, ResidualBlock):
                    nn.init.zeros_(module.branch[-1].weight)

        self.feature_channels: tuple[int, ...] = (STEM_CHANNELS,) + tuple(
            width * EXPANSION[kind] for width in STAGE_WIDTHS
        )
        self.feature_strides: tuple[int, ...] = FEATURE_STRIDES
        self.out_features: int = self.feature_channels[-1]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid of x (N, C, *S).

        Returns five maps (N, feature_channels[i], *ceil(S / feature_strides[i])): the stem
        output at /2, then the outputs of the four stages at /4, /8, /16 and /32.
        """
        x = self.stem(x)
        features = [x]
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the last feature map: (N, C, *S) -> (N, out_features)."""
        return self.forward_features(x)[-1].flatten(2).mean(dim=2)
