"""The vision-transformer encoder that the ViT models share, and the base of the models that
fine-tune it.

Every ViT model of siteflow (``vit_classifier``, ``mae_vit``, ``unetr``) holds the same encoder,
MONAI's :class:`monai.networks.nets.ViT` without classification token nor head, under the
attribute ``vit``: its weights are named ``vit.patch_embedding.*``, ``vit.blocks.<i>.*`` and
``vit.norm.*`` in all three, so an encoder pre-trained as a masked autoencoder loads by name
into a classifier or a UNETR (:mod:`siteflow.models.pretrained`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from monai.networks.nets import ViT
from torch import nn

from siteflow.models.pretrained import ENCODER_PREFIX, LoadReport, load_encoder

log = logging.getLogger(__name__)

_REPORTED: set[str] = set()
"""The load reports logged at INFO so far: a run builds its network many times (every site,
every round), the same report is logged once."""


@dataclass(frozen=True)
class ViTOptions:
    """The encoder's options (``common.model.kwargs`` of every ViT model), checked on creation.

    An encoder pre-trained with some options loads only into a model with the same ones (the
    weights' shapes follow them; see :mod:`siteflow.models.pretrained`).
    """

    img_size: tuple[int, ...] = (64, 64)
    """The input's spatial size in pixels (voxels), one entry per spatial axis, ``[H, W]`` or
    ``[D, H, W]``; each must be a multiple of ``patch_size``, and the data must come at this size."""
    patch_size: int = 16
    """Side, in pixels (voxels), of the square (cubic) patches that become the tokens."""
    hidden_size: int = 192
    """Width of the tokens; a multiple of ``num_heads`` and, with ``"sincos"`` position
    embeddings, of 4 (2D) or 6 (3D)."""
    mlp_dim: int = 768
    """Hidden width of each transformer block's MLP."""
    num_layers: int = 12
    """Transformer blocks of the encoder (the depth that ``layer_decay`` counts)."""
    num_heads: int = 3
    """Attention heads per block; ``hidden_size`` is split among them."""
    spatial_dims: Literal[2, 3] = 2
    """2 for images, 3 for volumes; the length of ``img_size``."""
    dropout_rate: float = 0.0
    """Dropout probability, in [0, 1), in the blocks and on the embedded patches; 0: none."""
    pos_embed_type: Literal["sincos", "learnable"] = "sincos"
    """Position embeddings: ``"sincos"`` (fixed, as in MAE) or ``"learnable"`` (trained)."""
    qkv_bias: bool = True
    """Whether the attention's query, key and value projections have a bias (also in a
    ``mae_vit`` decoder)."""

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {self.spatial_dims!r}")
        if len(self.img_size) != self.spatial_dims:
            raise ValueError(f"img_size {list(self.img_size)} must have spatial_dims={self.spatial_dims} sizes")
        for name in ("patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if any(size < 1 or size % self.patch_size for size in self.img_size):
            raise ValueError(
                f"img_size {list(self.img_size)} is not divisible by patch_size {self.patch_size}: every size must be a "
                "positive multiple of the patch size"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        if self.pos_embed_type == "sincos":
            check_sincos_width(self.hidden_size, self.spatial_dims, "hidden_size")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), not {self.dropout_rate}")

    @property
    def grid(self) -> tuple[int, ...]:
        """Patches per spatial axis."""
        return tuple(size // self.patch_size for size in self.img_size)

    @property
    def num_patches(self) -> int:
        """Tokens of an image, L = prod(grid)."""
        return math.prod(self.grid)


def check_sincos_width(width: int, spatial_dims: int, option: str) -> None:
    """Sin-cos position embeddings of ``width`` need it divisible by 4 (2D) or 6 (3D): raise
    ValueError naming ``option`` otherwise."""
    factor = 2 * spatial_dims
    if width % factor:
        raise ValueError(f"{option} {width} must be a multiple of {factor} for sin-cos position embeddings in {spatial_dims}D")


def vit_encoder(in_channels: int, options: ViTOptions) -> ViT:
    """MONAI's ViT without classification: images (N, in_channels, *img_size) -> (tokens
    (N, L, hidden_size) after the final layer norm, the output of every block)."""
    return ViT(
        in_channels=in_channels,
        img_size=options.img_size,
        patch_size=options.patch_size,
        hidden_size=options.hidden_size,
        mlp_dim=options.mlp_dim,
        num_layers=options.num_layers,
        num_heads=options.num_heads,
        pos_embed_type=options.pos_embed_type,
        classification=False,
        dropout_rate=options.dropout_rate,
        spatial_dims=options.spatial_dims,
        qkv_bias=options.qkv_bias,
    )


class FineTunedViT(nn.Module):
    """Base of the models that fine-tune the shared encoder (``vit_classifier``, ``unetr``):
    the encoder ``vit`` and the fine-tuning options.

    A subclass builds its own layers after calling this ``__init__``, then calls
    :meth:`start_from_pretrained`.

    Args:
        in_channels: channels of the input.
        pretrained: a safetensors file whose ``vit.*`` tensors (a pre-trained encoder: a
            ``mae_vit`` run's final weights) replace the encoder's initial weights, checked
            as :func:`~siteflow.models.pretrained.load_encoder` says; a relative path is
            relative to the working folder, as a dataset's ``root_path``. None: random
            initial weights.
        freeze_encoder: train only the layers after the encoder (linear probing, for a
            classifier).
        layer_decay: layer-wise learning-rate decay: the learning rate of encoder block ``i``
            (of ``num_layers``) is scaled by ``layer_decay ** (num_layers - i)``, that of the
            patch embedding by ``layer_decay ** (num_layers + 1)``; the layers after the
            encoder keep the optimizer's. 1: no decay.
        **kwargs: the encoder's options, :class:`ViTOptions`.
    """

    options_class: ClassVar[type] = ViTOptions

    def __init__(
        self,
        in_channels: int,
        *,
        pretrained: str | None = None,
        freeze_encoder: bool = False,
        layer_decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], not {layer_decay}")
        self.options = ViTOptions(**kwargs)
        self.pretrained = pretrained
        self.freeze_encoder = freeze_encoder
        self.layer_decay = layer_decay
        self.vit = vit_encoder(in_channels, self.options)
        self.pretrained_report: LoadReport | None = None
        """What :meth:`start_from_pretrained` loaded, skipped and newly initialised."""

    def start_from_pretrained(self) -> None:
        """Load the ``pretrained`` encoder (logging what was loaded, skipped and newly
        initialised), then freeze the encoder if asked; a subclass calls it last in its
        ``__init__``."""
        if self.pretrained is not None:
            self.pretrained_report = load_encoder(self, self.pretrained)
            report = str(self.pretrained_report)
            log.log(logging.DEBUG if report in _REPORTED else logging.INFO, "%s", report)
            _REPORTED.add(report)
        if self.freeze_encoder:
            self.vit.requires_grad_(False)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups, each with its ``lr_scale`` (layer-wise decay):
        one per encoder depth (patch embedding, then each block), and one for the rest."""
        depth = self.options.num_layers
        groups: dict[int, list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            groups.setdefault(_layer_of(name, depth), []).append(parameter)
        return [
            {"params": parameters, "lr_scale": self.layer_decay ** (depth + 1 - layer)}
            for layer, parameters in sorted(groups.items())
        ]


def _layer_of(name: str, depth: int) -> int:
    """The depth of parameter ``name`` for layer-wise decay: 0 for the patch embedding, i + 1
    for encoder block i, ``depth + 1`` for the final norm and every layer after the encoder."""
    if name.startswith(f"{ENCODER_PREFIX}patch_embedding."):
        return 0
    if name.startswith(f"{ENCODER_PREFIX}blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1

