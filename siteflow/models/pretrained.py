"""Starting a model from a pre-trained encoder: its ``vit.*`` weights, read from a safetensors
file and loaded by name.

The file may come from another site (a federated pre-training's final weights), so it is
read as untrusted weights are (:func:`siteflow.core.io.read_weights`): a regular file only, a
safetensors header of bounded length, tensors only (never unpickled), finite values. Its encoder must be
the model's encoder exactly: the same tensor names and shapes, or the file is refused with
every difference listed. The file's other tensors (a masked autoencoder's decoder) are
skipped; the model's other weights (a classifier's head, a UNETR's decoder) keep their fresh
initialisation. :class:`LoadReport` says which is which.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from siteflow.core.errors import FileRefused
from siteflow.core.io import read_weights as read_untrusted

ENCODER_PREFIX = "vit."
"""The name prefix of the encoder's weights in every ViT model."""

MAX_LISTED = 12
"""Most names a report or a refusal lists (then how many more)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_encoder` did: names of the tensors loaded into the model, of the
    file's tensors skipped (not the encoder's) and of the model's weights left newly
    initialised (not the encoder's)."""

    path: str
    loaded: tuple[str, ...]
    skipped: tuple[str, ...]
    initialised: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"pre-trained encoder {self.path}: loaded {len(self.loaded)} tensors ({ENCODER_PREFIX}*); "
            f"skipped {len(self.skipped)} of the file's ({_listed(self.skipped)}); "
            f"newly initialised {len(self.initialised)} of the model's ({_listed(self.initialised)})"
        )


def load_encoder(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load the encoder weights (``vit.*``) of the safetensors file ``path`` into ``model``.

    Raises:
        FileRefused (a ValueError) naming the file: it cannot be read, is not a safetensors
            file, holds non-finite values, or its encoder differs from ``model``'s (every
            missing, unexpected and reshaped tensor, with both shapes).
    """
    weights = read_weights(Path(path))
    ours = {name: tensor for name, tensor in model.state_dict().items() if name.startswith(ENCODER_PREFIX)}
    theirs = {name: tensor for name, tensor in weights.items() if name.startswith(ENCODER_PREFIX)}
    problems = [f"missing {name} {list(ours[name].shape)}" for name in sorted(ours.keys() - theirs.keys())]
    problems += [f"unexpected {name} {list(theirs[name].shape)}" for name in sorted(theirs.keys() - ours.keys())]
    problems += [
        f"{name} has shape {list(theirs[name].shape)}, the model's {list(ours[name].shape)}"
        for name in sorted(ours.keys() & theirs.keys())
        if theirs[name].shape != ours[name].shape
    ]
    if problems:
        raise FileRefused(
            path,
            f"its encoder does not match the configured one ({len(problems)} differences): {_listed(problems, '; ')}; "
            "pre-train with the same encoder options (img_size, patch_size, hidden_size, mlp_dim, num_layers, "
            "num_heads, spatial_dims, pos_embed_type, qkv_bias) and in_channels",
        )
    if not any(tensor.is_meta for tensor in ours.values()):  # a model on the meta device (config validation) is only checked
        model.load_state_dict(theirs, strict=False)
    return LoadReport(
        str(path),
        loaded=tuple(sorted(theirs)),
        skipped=tuple(sorted(weights.keys() - theirs.keys())),
        initialised=tuple(name for name in model.state_dict() if name not in theirs),
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, read as untrusted weights
    (regular file, bounded header, finite values), on the CPU; cached while the file is
    unchanged (every network a run builds starts from it)."""
    try:
        status = path.stat()
    except OSError as error:
        raise FileRefused(path, f"cannot read the pre-trained weights ({error.strerror}): run the pre-training that writes them first") from None
    return dict(_read_checked(str(path.resolve()), status.st_mtime_ns, status.st_size))


@functools.lru_cache(maxsize=2)
def _read_checked(path: str, mtime_ns: int, size: int) -> dict[str, torch.Tensor]:
    """:func:`read_weights` of ``path`` as it was at (``mtime_ns``, ``size``)."""
    return read_untrusted(path, "pre-trained weights")


def _listed(names: list[str] | tuple[str, ...], separator: str = ", ") -> str:
    """The first :data:`MAX_LISTED` of ``names``, then how many more."""
    shown = separator.join(names[:MAX_LISTED]) or "none"
    return shown + (f", and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")
