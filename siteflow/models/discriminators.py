"""Site-conditional discriminators for generative replay (relay learning)."""

from __future__ import annotations

import torch
from torch import nn

from siteflow.models.generators import MAX_SITES, NEGATIVE_SLOPE, check_size


class MinibatchStd(nn.Module):
    """Appends the minibatch standard deviation as one more feature map (ProGAN, StyleGAN2):
    within groups of ``group_size`` samples, the standard deviation of every feature over the
    group, averaged to one value per group and broadcast: (N, C, H, W) -> (N, C + 1, H, W).
    A batch not divisible by ``group_size`` uses the largest divisor of N below it.

    A generator that collapses to one mode gives a group of nearly equal samples, hence a
    standard deviation near 0 that real batches do not have, which the discriminator sees.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        while n % group:
            group -= 1
        grouped = x.reshape(group, n // group, c, h, w)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N / group,)
        feature = std.repeat(group)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, feature], dim=1)


class ProjectionDiscriminator(nn.Module):
    """Judges whether an input belongs to a site: (x (N, C, S, S), site (N,) int64) -> logits (N,).

    Strided convolutions down to 4x4, the minibatch standard deviation, a last convolution,
    then ``linear(h) + <embedding(site), h>`` on the summed features (a projection
    discriminator, Miyato & Koyama 2018, so the site condition shapes the decision). No
    normalisation layers, as R1 regularisation wants.

    Args:
        in_channels: C, the input's channels.
        image_size: side S, a power of two >= 16.
        channels: width after the first downsampling, doubled at every next one up to 256.
        group_size: group of the minibatch standard deviation.
    """

    def __init__(self, in_channels: int, image_size: int, *, channels: int = 32, group_size: int = 4) -> None:
        super().__init__()
        steps = check_size(image_size)
        widths = [in_channels] + [min(channels * 2**i, 256) for i in range(steps)]
        self.trunk = nn.Sequential(
            *(nn.Sequential(nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE)) for a, b in zip(widths, widths[1:]))
        )
        self.minibatch_std = MinibatchStd(group_size)
        self.last = nn.Sequential(nn.Conv2d(widths[-1] + 1, widths[-1], 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.linear = nn.Linear(widths[-1], 1)
        self.site_embedding = nn.Embedding(MAX_SITES, widths[-1])

    def forward(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        h = self.last(self.minibatch_std(self.trunk(x))).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.site_embedding(site) * h).sum(dim=1)
