"""The masked autoencoder (He et al., 2022) on the shared ViT encoder, for self-supervised
pre-training (the ``masked_image_modelling`` task)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.blocks.transformerblock import TransformerBlock
from torch import nn

from siteflow.core.registry import MODELS
from siteflow.models.vit import ViTOptions, check_sincos_width, vit_encoder

NORM_EPS = 1e-6
"""Added to a patch's variance before its normalised target divides by its square root."""


@dataclass(frozen=True)
class Reconstruction:
    """A masked autoencoder's output for a batch of N images of L patches of P values each.

    Attributes:
        pred: the decoder's prediction of every patch, float (N, L, P).
        target: what the loss compares it with: every patch's values (C * patch_size**dims,
            channel last), normalised per patch when ``norm_pix_loss``; float (N, L, P).
        mask: 1 for a masked (hidden) patch, 0 for a visible one; float (N, L).
    """

    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        """The batch size N (what Lightning's logging weighs a batch by)."""
        return len(self.pred)

    def first(self, count: int) -> Reconstruction:
        """The reconstruction of the first ``count`` images."""
        return Reconstruction(self.pred[:count], self.target[:count], self.mask[:count])


@MODELS.register("mae_vit")
class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder: images (N, C, *img_size) -> :class:`Reconstruction`.

    Every image's patches are masked at random, a different set per image and exactly
    ``round(mask_ratio * L)`` of its L patches; the shared encoder ``vit`` (its weights load
    by name into ``vit_classifier`` and ``unetr``) sees the visible ones only; a light
    decoder (``decoder_*``: fixed sin-cos position embeddings, a learned mask token in place
    of every masked patch) predicts the values of every patch. The loss
    (``masked_mse``) scores the masked patches only.

    A study whose model is ``mae_vit`` trains the ``masked_image_modelling`` task on its
    sites' images, whatever their labels (:attr:`task`).

    Args:
        in_channels: from the data (not set in the config).
        num_classes: ignored (there are no classes: siteflow passes 0).
        mask_ratio: the share of each image's patches that is masked, in (0, 1).
        decoder_hidden_size: width of the decoder's tokens (the encoder's are projected to
            it); a multiple of ``decoder_num_heads`` and of 4 (2D) or 6 (3D), for its sin-cos
            position embeddings.
        decoder_mlp_dim: hidden width of the MLP of each decoder block.
        decoder_num_layers: transformer blocks of the decoder (discarded after pre-training:
            only the encoder ``vit`` is loaded by the fine-tuned models).
        decoder_num_heads: attention heads per decoder block.
        norm_pix_loss: targets normalised per patch (its mean and variance over its values),
            as MAE's best setting; False: the raw values.
        **kwargs: the encoder's options (:class:`~siteflow.models.vit.ViTOptions`).
    """

    task: ClassVar[str] = "masked_image_modelling"
    options_class: ClassVar[type] = ViTOptions

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 0,
        *,
        mask_ratio: float = 0.75,
        decoder_hidden_size: int = 128,
        decoder_mlp_dim: int = 512,
        decoder_num_layers: int = 2,
        decoder_num_heads: int = 4,
        norm_pix_loss: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        options = ViTOptions(**kwargs)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), not {mask_ratio}")
        if not 1 <= round(mask_ratio * options.num_patches) < options.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} of the {options.num_patches} patches of an image masks "
                f"{round(mask_ratio * options.num_patches)}: at least one patch must be masked and one visible"
            )
        for name, value in (("decoder_hidden_size", decoder_hidden_size), ("decoder_mlp_dim", decoder_mlp_dim),
                            ("decoder_num_layers", decoder_num_layers), ("decoder_num_heads", decoder_num_heads)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if decoder_hidden_size % decoder_num_heads:
            raise ValueError(f"decoder_hidden_size {decoder_hidden_size} must be a multiple of decoder_num_heads {decoder_num_heads}")
        check_sincos_width(decoder_hidden_size, options.spatial_dims, "decoder_hidden_size")
        self.options = options
        self.in_channels = in_channels
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.vit = vit_encoder(in_channels, options)
        self.decoder_embed = nn.Linear(options.hidden_size, decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_size))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_pos_embed = build_sincos_position_embedding(list(options.grid), decoder_hidden_size, options.spatial_dims)
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(decoder_hidden_size, decoder_mlp_dim, decoder_num_heads, qkv_bias=options.qkv_bias)
            for _ in range(decoder_num_layers)
        )
        self.decoder_norm = nn.LayerNorm(decoder_hidden_size)
        self.decoder_pred = nn.Linear(decoder_hidden_size, in_channels * options.patch_size**options.spatial_dims)

    @property
    def num_masked(self) -> int:
        """Masked patches per image: ``round(mask_ratio * L)``."""
        return round(self.mask_ratio * self.options.num_patches)

    def random_mask(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random mask per image, float (batch, L): 1 at :attr:`num_masked` patches drawn
        without replacement (``generator``: a fixed draw, else the global random stream)."""
        scores = torch.rand(batch, self.options.num_patches, device=device, generator=generator)
        masked = scores.argsort(dim=1)[:, : self.num_masked]
        return torch.zeros_like(scores).scatter_(1, masked, 1.0)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> Reconstruction:
        """Images (N, C, *img_size), optionally the mask float (N, L) to apply (default: a
        new :meth:`random_mask`) -> :class:`Reconstruction`."""
        if mask is None:
            mask = self.random_mask(len(images), images.device)
        tokens = self.vit.patch_embedding(images)  # (N, L, D), position embeddings added
        batch, length, width = tokens.shape
        visible = (mask == 0).nonzero()[:, 1].reshape(batch, length - self.num_masked)  # (N, L_visible), ascending
        x = tokens.gather(1, visible.unsqueeze(-1).expand(-1, -1, width))
        for block in self.vit.blocks:
            x = block(x)
        x = self.decoder_embed(self.vit.norm(x))
        full = self.mask_token.to(x.dtype).expand(batch, length, -1).clone()
        full.scatter_(1, visible.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        x = full + self.decoder_pos_embed.to(x.dtype)
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))
        return Reconstruction(pred, self.targets(images), mask)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, *img_size) -> patches (N, L, C * patch_size**dims), in the encoder's
        token order (row-major over the patch grid), each patch's values channel last."""
        dims, side, grid = self.options.spatial_dims, self.options.patch_size, self.options.grid
        n, channels = images.shape[:2]
        split = images.reshape(n, channels, *(size for g in grid for size in (g, side)))
        order = [0, *(2 + 2 * d for d in range(dims)), *(3 + 2 * d for d in range(dims)), 1]
        return split.permute(order).reshape(n, math.prod(grid), -1)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`patchify`: (N, L, P) -> images (N, C, *img_size)."""
        dims, side, grid = self.options.spatial_dims, self.options.patch_size, self.options.grid
        n = patches.shape[0]
        split = patches.reshape(n, *grid, *([side] * dims), self.in_channels)
        order = [0, 2 * dims + 1, *(axis for d in range(dims) for axis in (1 + d, 1 + dims + d))]
        return split.permute(order).reshape(n, self.in_channels, *self.options.img_size)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """What the prediction is scored against: (N, L, P) patches, normalised per patch
        (mean 0, variance 1 over its P values) when ``norm_pix_loss``."""
        patches = self.patchify(images)
        if not self.norm_pix_loss:
            return patches
        mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        return (patches - mean) / (var + NORM_EPS).sqrt()

    def reconstructed(self, images: torch.Tensor, output: Reconstruction) -> torch.Tensor:
        """The picture of a reconstruction: visible patches as they are, masked ones as
        predicted (brought back to pixel values with each true patch's mean and variance
        when ``norm_pix_loss``); (N, C, *img_size)."""
        patches, pred = self.patchify(images), output.pred
        if self.norm_pix_loss:
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            pred = pred * (var + NORM_EPS).sqrt() + mean
        masked = output.mask.unsqueeze(-1)
        return self.unpatchify(patches * (1 - masked) + pred * masked)
