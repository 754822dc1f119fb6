"""Tests of siteflow.models: shapes, parameter counts, initialisation, training signal."""

import math

import pytest
import torch
from torch import nn

from siteflow.models import ResNet, ResNetClassifier, UNet
from siteflow.models.unet import MAX_CHANNELS, level_channels
from siteflow.core.registry import MODELS


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- hand counts of the architectures ------------------------------------------------------
# A convolution without bias has in * out * k^d weights; every norm layer has a scale and a
# shift per channel.


def conv_norm(cin: int, cout: int, kernel: int, dims: int) -> int:
    return cin * cout * kernel**dims + 2 * cout


def resnet_hand_count(in_channels: int, depth: int, dims: int) -> int:
    bottleneck = depth == 50
    blocks_per_stage = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    expansion = 4 if bottleneck else 1
    total = conv_norm(in_channels, 64, 7, dims)  # stem
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            cout = width * expansion
            if bottleneck:
                total += conv_norm(cin, width, 1, dims)
                total += conv_norm(width, width, 3, dims)
                total += conv_norm(width, cout, 1, dims)
            else:
                total += conv_norm(cin, width, 3, dims) + conv_norm(width, width, 3, dims)
            if stride != 1 or cin != cout:
                total += conv_norm(cin, cout, 1, dims)  # projection shortcut
            cin = cout
    return total


def double_conv(cin: int, cout: int, dims: int) -> int:
    return conv_norm(cin, cout, 3, dims) + conv_norm(cout, cout, 3, dims)


def unet_hand_count(
    in_channels: int,
    num_classes: int,
    dims: int,
    encoder_channels: list[int],
    decoder_channels: list[int],
    upsample_kernel: int,
) -> int:
    """Decoder + head; the caller adds its encoder's own count."""
    total = 0
    running = encoder_channels[-1]
    for skip, out in zip(reversed(encoder_channels[:-1]), reversed(decoder_channels)):
        total += running * out * upsample_kernel**dims  # upsampling conv, no bias
        total += double_conv(out + skip, out, dims)
        running = out
    return total + decoder_channels[0] * num_classes + num_classes  # 1x1 head with bias


@pytest.mark.parametrize(
    "depth, torchvision_count", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)]
)
def test_resnet_parameter_count_matches_hand_count_and_torchvision(depth, torchvision_count):
    assert resnet_hand_count(3, depth, 2) == torchvision_count
    assert count_parameters(ResNet(3, depth)) == torchvision_count


def test_resnet_3d_parameter_count_matches_hand_count():
    assert count_parameters(ResNet(1, 18, spatial_dims=3)) == resnet_hand_count(1, 18, 3)


def test_conv_unet_parameter_count_matches_hand_count():
    for dims, upsample, kernel in [(2, "transpose", 2), (2, "interp", 1), (3, "transpose", 2)]:
        channels = [8, 16, 32, 64]
        encoder = double_conv(2, 8, dims) + sum(
            double_conv(a, b, dims) for a, b in zip(channels[:-1], channels[1:])
        )
        decoder = unet_hand_count(2, 3, dims, channels, channels[:-1], kernel)
        model = UNet(2, 3, spatial_dims=dims, base_channels=8, depth=3, upsample=upsample)
        assert count_parameters(model) == encoder + decoder


def test_resnet_unet_parameter_count_matches_hand_count():
    full_res = double_conv(3, 16, 2)
    trunk = resnet_hand_count(3, 18, 2)
    decoder = unet_hand_count(3, 4, 2, [16, 64, 64, 128, 256, 512], [16, 32, 64, 128, 256], 2)
    model = UNet(3, 4, encoder="resnet18", base_channels=16)
    assert count_parameters(model) == full_res + trunk + decoder


# --- ResNet trunk ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims, size", [(2, (37, 50)), (3, (20, 24, 18))])
def test_resnet_feature_pyramid_shapes(dims, size):
    trunk = ResNet(5, 18, spatial_dims=dims).eval()
    x = torch.randn(2, 5, *size)
    with torch.no_grad():
        features = trunk.forward_features(x)
        pooled = trunk(x)
    assert trunk.feature_channels == (64, 64, 128, 256, 512)
    assert trunk.feature_strides == (2, 4, 8, 16, 32)
    assert len(features) == 5
    for feature, channels, stride in zip(features, trunk.feature_channels, trunk.feature_strides):
        assert feature.shape == (2, channels, *(math.ceil(s / stride) for s in size))
    assert pooled.shape == (2, trunk.out_features) == (2, 512)


def test_resnet50_channels():
    trunk = ResNet(1, 50)
    assert trunk.feature_channels == (64, 256, 512, 1024, 2048)
    assert trunk.out_features == 2048


def test_resnet_initialisation():
    trunk = ResNet(3, 18)
    stem_conv, stem_norm = trunk.stem[0], trunk.stem[1]
    expected_std = math.sqrt(2.0 / (64 * 7 * 7))  # Kaiming normal, fan-out
    assert stem_conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.all(stem_norm.weight == 1) and torch.all(stem_norm.bias == 0)


def test_zero_init_residual_zeroes_last_norm_of_every_block():
    trunk = ResNet(1, 50, zero_init_residual=True)
    last_norms = [block.branch[-1] for stage in trunk.stages for block in stage]
    assert len(last_norms) == 16
    assert all(torch.all(norm.weight == 0) for norm in last_norms)
    assert torch.all(ResNet(1, 50).stages[0][0].branch[-1].weight == 1)


# --- U-Net ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["conv", "resnet18", "resnet34"])
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
@pytest.mark.parametrize("upsample", ["transpose", "interp"])
def test_unet_2d_output_shape_for_odd_size(encoder, norm, upsample):
    model = UNet(
        3, 4, encoder=encoder, base_channels=4, depth=3, norm=norm, upsample=upsample
    )
    out = model(torch.randn(2, 3, 37, 50))
    assert out.shape == (2, 4, 37, 50)


@pytest.mark.parametrize(
    "encoder, norm, upsample",
    [
        ("conv", "batch", "transpose"),
        ("conv", "instance", "interp"),
        ("conv", "group", "transpose"),
        ("resnet18", "group", "interp"),
        ("resnet34", "batch", "transpose"),
    ],
)
def test_unet_3d_output_shape_for_odd_size(encoder, norm, upsample):
    model = UNet(
        1, 3, spatial_dims=3, encoder=encoder, base_channels=4, depth=2, norm=norm,
        upsample=upsample,
    )
    out = model(torch.randn(2, 1, 20, 24, 18))
    assert out.shape == (2, 3, 20, 24, 18)


def test_unet_keeps_size_already_divisible():
    model = UNet(1, 2, base_channels=4, depth=2)
    assert model(torch.randn(1, 1, 16, 8)).shape == (1, 2, 16, 8)


def test_level_channels_are_capped():
    assert level_channels(32, 5, 2) == (32, 64, 128, 256, 512)
    assert level_channels(32, 6, 3) == (32, 64, 128, 256, MAX_CHANNELS[3], MAX_CHANNELS[3])


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 1}, {"depth": 0}, {"dropout": 1.0}, {"encoder": "vgg"}]
)
def test_unet_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        UNet(1, 2, **kwargs)


@pytest.mark.parametrize(
    "build, first_conv",
    [
        (lambda: UNet(2, 3, base_channels=4, depth=2), lambda m: m.encoder.levels[0][0]),
        (lambda: UNet(2, 3, encoder="resnet18"), lambda m: m.encoder.trunk.stem[0]),
        (lambda: UNet(2, 3, encoder="resnet18"), lambda m: m.encoder.full_res[0]),
        (lambda: ResNetClassifier(2, 3), lambda m: m.trunk.stem[0]),
    ],
)
def test_gradients_reach_first_conv(build, first_conv):
    model = build()
    model(torch.randn(2, 2, 32, 32)).square().mean().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_same_seed_gives_identical_initial_weights():
    def build(seed: int) -> UNet:
        torch.manual_seed(seed)
        return UNet(1, 2, encoder="resnet18", base_channels=4)

    first, second, other = build(0).state_dict(), build(0).state_dict(), build(1).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])


@pytest.mark.parametrize(
    "build",
    [
        lambda: UNet(1, 2, base_channels=4, depth=2, dropout=0.5),
        lambda: UNet(1, 2, encoder="resnet18", base_channels=4, dropout=0.5),
        lambda: ResNetClassifier(1, 3, dropout=0.5),
    ],
)
def test_eval_mode_is_deterministic(build):
    model = build()
    x = torch.randn(2, 1, 32, 32)
    model.train()
    model(x)  # update batch-norm running statistics once
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_unet_overfits_one_image():
    torch.manual_seed(0)
    size = 32
    coords = torch.arange(size, dtype=torch.float32) - size / 2
    disc = (coords[:, None] ** 2 + coords[None, :] ** 2 < 8**2).long()  # (H, W)
    image = (disc.float() + 0.5 * torch.randn(size, size))[None, None]  # (1, 1, H, W)
    target = disc[None]  # (1, H, W)

    model = UNet(1, 2, base_channels=8, depth=2, norm="group")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(image), target).backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        prediction = model(image).argmax(dim=1)
    intersection = ((prediction == 1) & (target == 1)).sum().item()
    dice = 2 * intersection / ((prediction == 1).sum().item() + (target == 1).sum().item())
    assert dice > 0.9


# --- classifier and registry ----------------------------------------------------------------


@pytest.mark.parametrize("dims, size", [(2, (37, 50)), (3, (20, 24, 18))])
def test_classifier_logits_shape(dims, size):
    model = ResNetClassifier(2, 5, spatial_dims=dims)
    assert model(torch.randn(3, 2, *size)).shape == (3, 5)


def test_classifier_has_trunk_and_head():
    model = ResNetClassifier(3, 7, depth=50)
    names = {name for name, _ in model.named_children()}
    assert {"trunk", "head"} <= names
    assert isinstance(model.trunk, ResNet)
    assert isinstance(model.head, nn.Linear)
    assert model.head.weight.shape == (7, 2048)
    assert count_parameters(model) == resnet_hand_count(3, 50, 2) + 2048 * 7 + 7


def test_models_are_registered():
    assert MODELS.get("unet") is UNet
    assert MODELS.get("resnet_classifier") is ResNetClassifier
