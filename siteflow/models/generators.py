"""Conditional generators for generative replay (relay learning).

A site is identified by an integer code (its position in the relay chain); every network
embeds it. The label generator draws label maps of a site; the image generator renders an
image of a site from a label map, with the map (and the site, and per-pixel noise) modulating
every block as in SPADE (Park et al., CVPR 2019) with OASIS's noise beside the map
(Schönfeld et al., ICLR 2021). The image generator upsamples by bilinear resizing before each
convolution: no transposed convolutions (whose uneven overlaps draw a checkerboard), and no
nearest-neighbour blocks of the coarse levels. Both work on square images whose side is a
power of two (at least 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_SITES = 32
NEGATIVE_SLOPE = 0.2


def check_size(image_size: int) -> int:
    """The number of 2x up- or down-samplings between 4x4 and ``image_size`` (a power of two >= 16)."""
    steps = int(math.log2(image_size)) - 2 if image_size > 0 else -1
    if image_size < 16 or 2 ** (steps + 2) != image_size:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return steps


class LabelGenerator(nn.Module):
    """Draws label maps of a site: (z (N, z_dim), site (N,) int64) -> logits (N, num_classes, S, S).

    A DCGAN generator: upsampling convolutions with batch norm (which it learns label maps
    with where pixel norm did not; frozen, it replays with the running statistics).

    Args:
        num_classes: classes of the label maps (background included).
        image_size: side S of the square maps, a power of two >= 16.
        z_dim: size of the noise vector.
        channels: feature channels at 4x4, halved at every upsampling (at least 16).
    """

    def __init__(self, num_classes: int, image_size: int, *, z_dim: int = 64, channels: int = 128) -> None:
        super().__init__()
        steps = check_size(image_size)
        self.z_dim = z_dim
        self.site_embedding = nn.Embedding(MAX_SITES, z_dim)
        self.stem = nn.Sequential(nn.Linear(2 * z_dim, channels * 16), nn.Unflatten(1, (channels, 4, 4)), nn.LeakyReLU(NEGATIVE_SLOPE))
        widths = [max(channels // 2**i, 16) for i in range(steps + 1)]
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(a, b, 3, padding=1, bias=False),
                    nn.BatchNorm2d(b),
                    nn.LeakyReLU(NEGATIVE_SLOPE),
                )
                for a, b in zip(widths, widths[1:])
            )
        )
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)

    def forward(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(torch.cat([z, self.site_embedding(site)], dim=1))))


class Spade(nn.Module):
    """Spatially-adaptive normalisation: ``instance_norm(x) * (1 + gamma(c)) + beta(c)``, with
    gamma and beta convolved from the condition map resized to x's size (a shared 3x3
    convolution, then a 1x1 one; SPADE's are both 3x3, nine times the cost at full size).

    forward: (x (N, C, H, W), condition (N, K, S, S) with S >= H) -> (N, C, H, W).
    """

    def __init__(self, channels: int, condition_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(condition_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 1)  # 1x1: the shared 3x3 already sees the neighbourhood

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.shared(F.adaptive_avg_pool2d(condition, x.shape[2:]))  # area average keeps thin structures
        gamma, beta = self.gamma_beta(h).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SpadeBlock(nn.Module):
    """Bilinear upsampling by 2, then a residual block whose two convolutions (and the skip's,
    when the width changes) follow SPADE normalisations: (x (N, C_in, H, W), condition
    (N, K, S, S)) -> (N, C_out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int, condition_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = Spade(in_channels, condition_channels, hidden)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Spade(out_channels, condition_channels, hidden)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip_norm = Spade(in_channels, condition_channels, hidden) if in_channels != out_channels else None
        self.skip_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = self.conv1(F.leaky_relu(self.norm1(x, condition), NEGATIVE_SLOPE))
        h = self.conv2(F.leaky_relu(self.norm2(h, condition), NEGATIVE_SLOPE))
        skip = x if self.skip_conv is None else self.skip_conv(self.skip_norm(x, condition))
        return skip + h


class ImageGenerator(nn.Module):
    """Renders an image of a site from a label map (SPADE): the noise and the site's embedding
    start a 4x4 feature map, which every block upsamples under the modulation of the label map,
    of the site's embedding (broadcast over the map) and of per-pixel noise maps (OASIS's 3D
    noise: the noise sits beside the label map in every normalisation, so each noise renders
    its own texture around the same vessels).

    forward: (z (N, z_dim), site (N,) int64, labels one-hot or soft (N, K, S, S), noise
    (N, noise_channels, S, S)) -> image (N, out_channels, S, S) in [-1, 1]; :meth:`sample_noise`
    draws z and the noise maps.

    Args:
        num_classes: K, the label map's channels.
        out_channels: the image's channels.
        image_size: side S, a power of two >= 16.
        z_dim: size of the noise vector.
        channels: feature channels at full resolution, doubled at every coarser level up to 8x.
        site_channels: size of the site embedding that joins the label map in every block.
        noise_channels: per-pixel noise maps that join the label map in every block.
    """

    def __init__(
        self,
        num_classes: int,
        out_channels: int,
        image_size: int,
        *,
        z_dim: int = 64,
        channels: int = 32,
        site_channels: int = 8,
        noise_channels: int = 8,
    ) -> None:
        super().__init__()
        steps = check_size(image_size)
        self.z_dim = z_dim
        self.image_size = image_size
        self.noise_channels = noise_channels
        widths = [min(channels * 2 ** (steps - level), 8 * channels) for level in range(steps + 1)]  # 4x4 ... S x S
        self.start_channels = widths[0]
        self.site_embedding = nn.Embedding(MAX_SITES, z_dim)
        self.site_style = nn.Embedding(MAX_SITES, site_channels)
        self.stem = nn.Linear(2 * z_dim, widths[0] * 16)
        condition = num_classes + site_channels + noise_channels
        self.blocks = nn.ModuleList(SpadeBlock(a, b, condition, channels) for a, b in zip(widths, widths[1:]))
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def sample_noise(
        self, count: int, *, device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard normal (z (count, z_dim), noise maps (count, noise_channels, S, S)), drawn
        from ``generator`` (default: the global stream)."""
        z = torch.randn(count, self.z_dim, device=device, generator=generator)
        noise = torch.randn(count, self.noise_channels, self.image_size, self.image_size, device=device, generator=generator)
        return z, noise

    def forward(self, z: torch.Tensor, site: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        style = self.site_style(site)[:, :, None, None].expand(-1, -1, *labels.shape[2:])
        condition = torch.cat([labels, style, noise], dim=1)
        h = self.stem(torch.cat([z, self.site_embedding(site)], dim=1)).view(len(z), self.start_channels, 4, 4)
        for block in self.blocks:
            h = block(h, condition)
        return torch.tanh(self.head(F.leaky_relu(h, NEGATIVE_SLOPE)))
