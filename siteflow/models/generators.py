"""Conditional generators and discriminators for generative replay (relay learning).

A site is identified by an integer code (its position in the relay chain); every network
embeds it. The label generator draws label maps of a site, the image generator renders an
image of a site from a label map, and projection discriminators judge both. All networks
work on square images whose side is a power of two (at least 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_SITES = 32


def _check_size(image_size: int) -> int:
    """Number of 2x up/down-samplings between 4x4 and ``image_size``."""
    steps = int(math.log2(image_size)) - 2
    if image_size < 16 or 2 ** (steps + 2) != image_size:
        raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
    return steps


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))


class LabelGenerator(nn.Module):
    """Draws label maps of a site: (z (N, z_dim), site (N,)) -> logits (N, num_classes, S, S).

    Args:
        num_classes: classes of the label maps (background included).
        image_size: side S of the square maps, a power of two >= 16.
        z_dim: size of the noise vector.
        channels: feature channels at 4x4, halved at every upsampling (at least 16).
    """

    def __init__(self, num_classes: int, image_size: int, *, z_dim: int = 64, channels: int = 128) -> None:
        super().__init__()
        steps = _check_size(image_size)
        self.z_dim = z_dim
        self.site_embedding = nn.Embedding(MAX_SITES, z_dim)
        self.stem = nn.Linear(2 * z_dim, channels * 16)
        widths = [max(channels // 2**i, 16) for i in range(steps + 1)]
        self.blocks = nn.Sequential(*(_up_block(a, b) for a, b in zip(widths, widths[1:])))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)
        self.start_channels = channels

    def forward(self, z: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        h = self.stem(torch.cat([z, self.site_embedding(site)], dim=1))
        h = F.leaky_relu(h.view(len(z), self.start_channels, 4, 4), 0.2)
        return self.head(self.blocks(h))


class ImageGenerator(nn.Module):
    """Renders an image of a site from a label map: an encoder-decoder over the map, with the
    noise and the site's embedding injected at the bottleneck.

    forward: (z (N, z_dim), site (N,), labels one-hot or soft (N, K, S, S)) -> image
    (N, out_channels, S, S) in [-1, 1].
    """

    def __init__(
        self, num_classes: int, out_channels: int, image_size: int, *, z_dim: int = 64, channels: int = 32, depth: int = 3
    ) -> None:
        super().__init__()
        _check_size(image_size)
        if image_size >> depth < 4:
            raise ValueError(f"depth {depth} is too deep for image_size {image_size}")
        self.site_embedding = nn.Embedding(MAX_SITES, z_dim)
        widths = [channels * 2**i for i in range(depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(num_classes, widths[0], 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.down = nn.ModuleList(_down_block(a, b) for a, b in zip(widths, widths[1:]))
        self.inject = nn.Linear(2 * z_dim, widths[-1])
        self.up = nn.ModuleList(_up_block(2 * b if i else b, a) for i, (a, b) in enumerate(reversed(list(zip(widths, widths[1:])))))
        self.head = nn.Conv2d(2 * widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor, site: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(labels)]
        for block in self.down:
            skips.append(block(skips[-1]))
        style = self.inject(torch.cat([z, self.site_embedding(site)], dim=1))
        h = skips.pop() + style[:, :, None, None]
        for i, block in enumerate(self.up):
            h = block(h if i == 0 else torch.cat([h, skips.pop()], dim=1))
        return torch.tanh(self.head(torch.cat([h, skips.pop()], dim=1)))


class ProjectionDiscriminator(nn.Module):
    """Judges whether an input belongs to a site: (x (N, C, S, S), site (N,)) -> logits (N,).

    A strided conv trunk, then ``linear(h) + <embedding(site), h>`` (a projection
    discriminator, so the site condition shapes the decision).
    """

    def __init__(self, in_channels: int, image_size: int, *, channels: int = 32) -> None:
        super().__init__()
        steps = _check_size(image_size)
        widths = [in_channels] + [min(channels * 2**i, 256) for i in range(steps)]
        self.trunk = nn.Sequential(*(_down_block(a, b) for a, b in zip(widths, widths[1:])))
        self.linear = nn.Linear(widths[-1], 1)
        self.site_embedding = nn.Embedding(MAX_SITES, widths[-1])

    def forward(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.site_embedding(site) * h).sum(dim=1)
