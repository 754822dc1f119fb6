"""U-Net (Ronneberger et al., 2015) for 2D and 3D segmentation, with a plain or ResNet encoder.

An encoder returns a list of feature maps from full resolution down to the coarsest level;
the :class:`Decoder` climbs back, upsampling by 2 and fusing the skip of each level.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from siteflow.models import blocks
from siteflow.models.blocks import NormKind
from siteflow.models.resnet import ResNet, ResNetDepth
from siteflow.core.registry import MODELS

EncoderKind = Literal["conv", "resnet18", "resnet34"]
UpsampleKind = Literal["transpose", "interp"]

#: Channel cap of a level, by spatial dims (as in nnU-Net: 512 in 2D, 320 in 3D).
MAX_CHANNELS = {2: 512, 3: 320}
#: Most downsamplings of the ``conv`` encoder: inputs are padded to a multiple of 2^depth.
MAX_DEPTH = 8
#: Slope of the LeakyReLU after every convolution of a :class:`ConvBlock`.
NEGATIVE_SLOPE = 0.01
_RESNET_DEPTHS: dict[str, ResNetDepth] = {"resnet18": 18, "resnet34": 34}


def level_channels(base_channels: int, num_levels: int, spatial_dims: int) -> tuple[int, ...]:
    """Channels of levels 0 (full resolution) to num_levels - 1: base * 2^i, capped."""
    return tuple(
        min(base_channels * 2**level, MAX_CHANNELS[spatial_dims]) for level in range(num_levels)
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the end of every spatial axis of x (N, C, *S) to a multiple of ``multiple``.
    The pad always runs (a no-op of zeros where the size is already a multiple): a branch on
    the sizes would fix the exported graphs (ONNX, TorchScript) to the example's size."""
    padding: list[int] = []
    for size in reversed(x.shape[2:]):
        padding += [0, -size % multiple]
    return F.pad(x, padding)


class ConvBlock(nn.Sequential):
    """Two (3x3 conv, norm, LeakyReLU) layers, then dropout if p > 0.

    (N, C_in, *S) -> (N, C_out, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: NormKind,
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for layer_in in (in_channels, out_channels):
            layers += [
                blocks.conv(spatial_dims, layer_in, out_channels, 3),
                blocks.norm(norm, spatial_dims, out_channels),
                nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def upsampler(
    kind: UpsampleKind, spatial_dims: int, in_channels: int, out_channels: int
) -> nn.Module:
    """2x upsampling (N, C_in, *S) -> (N, C_out, *2S).

    ``transpose``: a transposed convolution; ``interp``: linear interpolation, then a 1x1
    convolution.
    """
    if kind == "transpose":
        return blocks.transposed_conv(spatial_dims, in_channels, out_channels)
    if kind == "interp":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=blocks.interpolation_mode(spatial_dims)),
            blocks.conv(spatial_dims, in_channels, out_channels, 1),
        )
    raise ValueError(f"unknown upsample {kind!r}; expected 'transpose' or 'interp'")


class ConvEncoder(nn.Module):
    """Plain U-Net encoder: a :class:`ConvBlock` per level, 2x max pooling between levels.

    ``forward`` maps (N, C, *S) to ``len(channels)`` maps, level i being
    (N, channels[i], *S / 2^i); S must be divisible by ``total_stride``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: tuple[int, ...],
        norm: NormKind,
        dropout: float,
    ) -> None:
        super().__init__()
        levels: list[nn.Module] = [ConvBlock(spatial_dims, in_channels, channels[0], norm, dropout)]
        for level_in, level_out in zip(channels[:-1], channels[1:]):
            levels.append(
                nn.Sequential(
                    blocks.max_pool(spatial_dims, 2, stride=2),
                    ConvBlock(spatial_dims, level_in, level_out, norm, dropout),
                )
            )
        self.levels = nn.ModuleList(levels)
        self.channels = channels
        self.total_stride = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class ResNetEncoder(nn.Module):
    """ResNet pyramid plus a full-resolution :class:`ConvBlock` on the input.

    ``forward`` maps (N, C, *S) to six maps: the full-resolution block output
    (N, full_res_channels, *S), then the trunk's pyramid at /2, /4, /8, /16 and /32
    (channels in ``channels[1:]``); S must be divisible by ``total_stride`` (32).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        depth: ResNetDepth,
        full_res_channels: int,
        norm: NormKind,
        dropout: float,
    ) -> None:
        super().__init__()
        self.full_res = ConvBlock(spatial_dims, in_channels, full_res_channels, norm, dropout)
        self.trunk = ResNet(in_channels, depth, spatial_dims=spatial_dims, norm=norm)
        self.channels = (full_res_channels, *self.trunk.feature_channels)
        self.total_stride = self.trunk.feature_strides[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.full_res(x), *self.trunk.forward_features(x)]


class Decoder(nn.Module):
    """Climbs an encoder's pyramid from the coarsest map to full resolution.

    At each level i (coarsest first) it upsamples the running map 2x to
    ``decoder_channels[i]`` channels, concatenates the encoder map of level i and applies a
    :class:`ConvBlock` back to ``decoder_channels[i]`` channels.

    Args:
        encoder_channels: channels of the encoder maps, full resolution first.
        decoder_channels: output channels of the decoder at levels 0 .. len(encoder_channels) - 2.
    """

    def __init__(
        self,
        spatial_dims: int,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...],
        norm: NormKind,
        upsample: UpsampleKind,
        dropout: float,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError("need one decoder level per encoder level but the coarsest")
        ups, fuses = [], []
        running = encoder_channels[-1]
        for skip, out in zip(reversed(encoder_channels[:-1]), reversed(decoder_channels)):
            ups.append(upsampler(upsample, spatial_dims, running, out))
            fuses.append(ConvBlock(spatial_dims, out + skip, out, norm, dropout))
            running = out
        self.ups = nn.ModuleList(ups)
        self.fuses = nn.ModuleList(fuses)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Encoder maps (full resolution first) -> (N, decoder_channels[0], *S_0)."""
        x = features[-1]
        for up, fuse, skip in zip(self.ups, self.fuses, reversed(features[:-1])):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return x


@MODELS.register("unet")
class UNet(nn.Module):
    """U-Net segmentation model: (N, in_channels, *S) -> logits (N, num_classes, *S).

    Any spatial size S works: the input is zero-padded at the end of each axis to a multiple
    of the encoder's total stride (2^depth, or 32 for ResNet encoders) and the logits are
    cropped back.

    Args:
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        spatial_dims: 2 for images, 3 for volumes.
        encoder: ``conv`` (plain double-conv encoder with ``depth`` downsamplings) or a ResNet
            trunk (five downsamplings; ``depth`` is unused), whose pyramid is completed by a
            full-resolution conv block on the input.
        base_channels: channels at full resolution; level i has base * 2^i, capped at 512 (2D)
            or 320 (3D). For ResNet encoders this sets the decoder widths.
        depth: number of downsamplings of the ``conv`` encoder.
        norm: normalisation after every convolution.
        upsample: ``transpose`` (2x2 transposed convolution) or ``interp`` (linear interpolation
            then a 1x1 convolution).
        dropout: dropout probability after every conv block (0 disables it).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        spatial_dims: int = 2,
        encoder: EncoderKind = "conv",
        base_channels: int = 32,
        depth: int = 4,
        norm: NormKind = "batch",
        upsample: UpsampleKind = "transpose",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks.check_spatial_dims(spatial_dims)
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between 1 and {MAX_DEPTH}, got {depth}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be at least 1, got {base_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.encoder: ConvEncoder | ResNetEncoder
        if encoder == "conv":
            channels = level_channels(base_channels, depth + 1, spatial_dims)
            self.encoder = ConvEncoder(spatial_dims, in_channels, channels, norm, dropout)
        elif encoder in _RESNET_DEPTHS:
            self.encoder = ResNetEncoder(
                spatial_dims, in_channels, _RESNET_DEPTHS[encoder], base_channels, norm, dropout
            )
        else:
            raise ValueError(f"unknown encoder {encoder!r}; expected conv, resnet18 or resnet34")

        encoder_channels = self.encoder.channels
        decoder_channels = level_channels(base_channels, len(encoder_channels) - 1, spatial_dims)
        self.decoder = Decoder(
            spatial_dims, encoder_channels, decoder_channels, norm, upsample, dropout
        )
        self.head = blocks.conv(spatial_dims, decoder_channels[0], num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, *S) -> logits (N, num_classes, *S)."""
        size = x.shape[2:]
        features = self.encoder(pad_to_multiple(x, self.encoder.total_stride))
        logits = self.head(self.decoder(features))
        return logits[(..., *(slice(0, s) for s in size))]
