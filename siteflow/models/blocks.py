"""Layer factories indexed by the number of spatial dimensions.

Every model in :mod:`siteflow.models` builds its layers through these functions, so one code
path serves 2D images (N, C, H, W) and 3D volumes (N, C, D, H, W). Convolutions come out
already initialised (Kaiming normal, fan-out, ReLU gain; zero bias); normalisation layers
start as the identity map (weight 1, bias 0).
"""

import math
from typing import Literal

from torch import nn

NormKind = Literal["batch", "instance", "group"]

SPATIAL_DIMS = (2, 3)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_INTERPOLATION = {2: "bilinear", 3: "trilinear"}

#: Upper bound on the number of groups of :class:`torch.nn.GroupNorm`.
MAX_NORM_GROUPS = 8


def check_spatial_dims(spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``spatial_dims`` is 2 or 3."""
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def _kaiming_init(layer: nn.Module) -> nn.Module:
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    bias: bool = False,
) -> nn.Module:
    """A 'same'-padded convolution: (N, in, *S) -> (N, out, *ceil(S / stride))."""
    layer = _CONV[spatial_dims](
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias
    )
    return _kaiming_init(layer)


def transposed_conv(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """2x upsampling transposed convolution (kernel 2, stride 2, no bias).

    (N, in, *S) -> (N, out, *2S).
    """
    layer = _TRANSPOSED_CONV[spatial_dims](in_channels, out_channels, 2, stride=2, bias=False)
    return _kaiming_init(layer)


def norm(kind: NormKind, spatial_dims: int, channels: int) -> nn.Module:
    """A shape-preserving normalisation layer with a learnt per-channel scale and shift.

    ``group`` uses ``gcd(channels, 8)`` groups; ``instance`` keeps no running statistics.
    """
    if kind == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    if kind == "instance":
        return _INSTANCE_NORM[spatial_dims](channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, MAX_NORM_GROUPS), channels)
    raise ValueError(f"unknown norm {kind!r}; expected 'batch', 'instance' or 'group'")


def max_pool(spatial_dims: int, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    """Max pooling over every spatial dimension."""
    return _MAX_POOL[spatial_dims](kernel_size, stride=stride, padding=padding)


def interpolation_mode(spatial_dims: int) -> str:
    """The linear mode of :func:`torch.nn.functional.interpolate` for ``spatial_dims``."""
    return _INTERPOLATION[spatial_dims]
