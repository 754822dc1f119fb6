"""Adversarial training that works from tens of images: differentiable augmentation of every
discriminator input (DiffAugment, Zhao et al., NeurIPS 2020), lazy R1 regularisation
(Mescheder et al., ICML 2018), a mode-seeking term against collapse (MSGAN, Mao et al.,
CVPR 2019) and a class-balanced L1 towards the real image of a label map, with the
non-saturating GAN loss."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

AugmentOp = Literal["color", "translation", "cutout"]
AUGMENT_OPS: tuple[AugmentOp, ...] = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # side of the erased square, as a fraction of the side


def diff_augment(x: torch.Tensor, ops: Sequence[AugmentOp], color_channels: int) -> torch.Tensor:
    """DiffAugment: random per-sample transforms, differentiable (twice) with respect to ``x``.

    ``"color"``: brightness, saturation and contrast of the first ``color_channels`` channels
    (the image; the label channels after them are left alone). ``"translation"``: an integer
    shift of up to 1/8 of the side, zero-filled. ``"cutout"``: a square of half the side set
    to zero. Geometric transforms move all channels together, so an image stays on its
    label map.

    Args:
        x: (N, C, H, W) float.
        ops: the transforms, applied in the order given.
        color_channels: how many leading channels are image intensities.

    Returns:
        (N, C, H, W), the same dtype.
    """
    for op in ops:
        if op == "color" and color_channels:
            x = torch.cat([_color(x[:, :color_channels]), x[:, color_channels:]], dim=1)
        elif op == "translation":
            x = _translation(x)
        elif op == "cutout":
            x = _cutout(x)
    return x


def _color(x: torch.Tensor) -> torch.Tensor:
    n = len(x)
    x = x + (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    shift_y, shift_x = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = torch.randint(-shift_y, shift_y + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-shift_x, shift_x + 1, (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(
        torch.arange(n, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
    )
    rows = (rows + ty + 1).clamp(0, h + 1)
    cols = (cols + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # the zero border is what clamped indices read
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = torch.randint(0, h + 1 - size_y % 2, (n, 1, 1), device=x.device) - size_y // 2
    left = torch.randint(0, w + 1 - size_x % 2, (n, 1, 1), device=x.device) - size_x // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (N, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def mode_seeking_penalty(outputs: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's term: ``1 / (mean |G(z_a) - G(z_b)| / mean |z_a - z_b| + eps)``, pairing the first
    half of the batch with the second; small when different noises give different outputs.

    Args:
        outputs: G(z), (N, ...) float with N >= 2.
        z: the noises, (N, z_dim).

    Returns:
        A scalar.
    """
    half = len(z) // 2
    if half == 0:
        raise ValueError("the mode-seeking term compares pairs: it needs at least 2 samples")
    spread = (outputs[:half] - outputs[half : 2 * half]).abs().mean() / (z[:half] - z[half : 2 * half]).abs().mean()
    return 1 / (spread + eps)


def class_balanced_l1(fake: torch.Tensor, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean absolute difference over each class's pixels, averaged over the classes present:
    thin structures (vessels, a tenth of the pixels or less) count as much as the background,
    where a plain L1 lets the background's error hide theirs.

    Args:
        fake, real: images (N, C, S, S).
        labels: one-hot label maps (N, K, S, S) of ``real``.

    Returns:
        A scalar.
    """
    error = (fake - real).abs().mean(dim=1, keepdim=True)  # (N, 1, S, S)
    pixels = labels.sum(dim=(0, 2, 3))  # (K,)
    per_class = (error * labels).sum(dim=(0, 2, 3)) / pixels.clamp(min=1)
    return per_class[pixels > 0].mean()


class Critic(nn.Module):
    """A discriminator behind DiffAugment, trained with the non-saturating logistic loss and
    lazy R1 (every ``r1_interval`` steps, scaled by the interval, as StyleGAN2 does).

    Args:
        discriminator: (x (N, C, S, S), site (N,)) -> logits (N,).
        color_channels: leading channels of x that are image intensities (0: a label map).
        augment: the DiffAugment transforms of every input, real and generated alike.
        r1_gamma: weight gamma of ``gamma / 2 * E ||grad_x D(x)||^2`` on real inputs; 0: none.
    """

    def __init__(self, discriminator: nn.Module, *, color_channels: int, augment: Sequence[AugmentOp], r1_gamma: float) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.color_channels = color_channels
        self.augment = tuple(augment)
        self.r1_gamma = r1_gamma

    def forward(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """Logits (N,) of the augmented inputs x (N, C, S, S)."""
        return self.discriminator(diff_augment(x, self.augment, self.color_channels), site)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, site: torch.Tensor, *, r1_scale: float = 0.0) -> torch.Tensor:
        """``softplus(D(fake)) + softplus(-D(real))``, plus R1 times ``r1_scale`` (the lazy
        interval on the steps that regularise, else 0); ``fake`` is detached. A scalar."""
        regularise = r1_scale > 0 and self.r1_gamma > 0
        real = real.detach().requires_grad_(regularise)
        real_logits = self(real, site)
        loss = F.softplus(-real_logits).mean() + F.softplus(self(fake.detach(), site)).mean()
        if regularise:
            (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + r1_scale * self.r1_gamma / 2 * gradient.square().sum(dim=(1, 2, 3)).mean()
        return loss

    def generator_loss(self, fake: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``softplus(-D(fake))``: the generator's side (a scalar)."""
        return F.softplus(-self(fake, site)).mean()
