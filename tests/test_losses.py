"""Losses against hand computations, torch and MONAI."""

from __future__ import annotations

import inspect
import math
import types
import typing

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCELoss

import siteflow.losses  # noqa: F401  (registers the losses)
from siteflow.kernels import dice_loss
from siteflow.losses import CrossEntropyLoss, DiceCELoss, ExpLogLoss, SoftDiceLoss, distillation_loss
from siteflow.core.registry import LOSSES

# A 2x2 image, foreground probabilities and labels; per pixel the probability of the true class
# is 0.8, 0.6, 0.7, 0.9. Soft Dice (smooth 1): foreground 3.8 / 4.8, background 4.2 / 5.2.
FG_PROB = torch.tensor([[[0.8, 0.6], [0.3, 0.1]]], dtype=torch.float64)
LABELS = torch.tensor([[[1, 1], [0, 0]]])
LOGITS = torch.stack([torch.log1p(-FG_PROB), torch.log(FG_PROB)], 1)
MEAN_DICE = (3.8 / 4.8 + 4.2 / 5.2) / 2
NLL = [-math.log(p) for p in (0.8, 0.6, 0.7, 0.9)]


def random_case(shape: tuple[int, ...], channels: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(shape[0], channels, *shape[1:], generator=gen, dtype=dtype)
    return logits, torch.randint(0, max(channels, 2), shape, generator=gen)


def test_registered_names():
    assert LOSSES.get("dice") is SoftDiceLoss
    assert LOSSES.get("ce") is CrossEntropyLoss
    assert LOSSES.get("explog") is ExpLogLoss
    assert LOSSES.get("dice_ce") is DiceCELoss


def is_config_type(hint) -> bool:
    """Whether ``hint`` is built from int, float, bool, str, None, list[...], unions and Literal."""
    origin = typing.get_origin(hint)
    if origin is None:
        return hint in (int, float, bool, str, type(None))
    if origin is typing.Literal:
        return all(isinstance(v, (int, float, bool, str)) for v in typing.get_args(hint))
    return origin in (list, typing.Union, types.UnionType) and all(map(is_config_type, typing.get_args(hint)))


@pytest.mark.parametrize("name", ["dice", "ce", "explog", "dice_ce"])
def test_constructor_options_are_typed(name):
    """Every option has a default and a hint the config layer understands; no **kwargs."""
    cls = LOSSES.get(name)
    hints = typing.get_type_hints(cls.__init__)
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert param.default is not inspect.Parameter.empty
        assert is_config_type(hints[param.name]), (param.name, hints[param.name])
    cls()(*random_case((1, 3, 3), 2, seed=0))


class TestSoftDice:
    def test_calls_the_kernel(self):
        logits, labels = random_case((2, 5, 5), 3, seed=1)
        loss = SoftDiceLoss(include_background=False, batch_dice=True, smooth=0.5, ignore_index=2)
        expected = dice_loss(logits, labels, include_background=False, batch_dice=True, smooth=0.5, ignore_index=2)
        torch.testing.assert_close(loss(logits, labels), expected, rtol=0, atol=0)

    def test_hand_example(self):
        assert SoftDiceLoss()(LOGITS, LABELS).item() == pytest.approx(1 - MEAN_DICE, abs=1e-12)


class TestCrossEntropy:
    def test_hand_example(self):
        assert CrossEntropyLoss()(LOGITS, LABELS).item() == pytest.approx(sum(NLL) / 4, abs=1e-12)
        weighted = CrossEntropyLoss(class_weights=[1.0, 3.0])(LOGITS, LABELS).item()
        assert weighted == pytest.approx((3 * NLL[0] + 3 * NLL[1] + NLL[2] + NLL[3]) / 8, abs=1e-12)

    @pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 5)])
    def test_matches_torch(self, shape):
        logits, labels = random_case(shape, 4, seed=2)
        labels[:, 0] = 255
        weights = [0.5, 1.0, 2.0, 4.0]
        ours = CrossEntropyLoss(class_weights=weights, ignore_index=255)(logits, labels.to(torch.uint8))
        ref = F.cross_entropy(logits, labels, weight=torch.tensor(weights, dtype=torch.float64), ignore_index=255)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    def test_single_channel_is_binary_cross_entropy(self):
        logits, labels = random_case((2, 6, 6), 1, seed=3)
        weights = torch.tensor([1.0, 3.0], dtype=torch.float64)
        pixel_weights = weights[labels]
        ref = F.binary_cross_entropy_with_logits(
            logits[:, 0], labels.double(), weight=pixel_weights, reduction="sum"
        ) / pixel_weights.sum()
        ours = CrossEntropyLoss(class_weights=weights.tolist())(logits, labels)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    def test_weights_are_a_buffer_outside_the_state_dict(self):
        loss = CrossEntropyLoss(class_weights=[1.0, 2.0])
        assert "class_weights" in dict(loss.named_buffers())
        assert "class_weights" not in loss.state_dict()
        assert loss.double().class_weights.dtype == torch.float64

    def test_half_input_gives_float32(self):
        logits, labels = random_case((2, 4, 4), 3, seed=4, dtype=torch.float32)
        loss = CrossEntropyLoss(class_weights=[1.0, 2.0, 3.0])(logits.half(), labels)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, CrossEntropyLoss(class_weights=[1.0, 2.0, 3.0])(logits, labels), atol=1e-2, rtol=0)

    def test_errors(self):
        with pytest.raises(ValueError, match="class_weights"):
            CrossEntropyLoss(class_weights=[1.0, -1.0])
        with pytest.raises(ValueError, match="class_weights has 2 entries for 3 classes"):
            CrossEntropyLoss(class_weights=[1.0, 1.0])(*random_case((1, 3, 3), 3, seed=0))
        logits, labels = random_case((1, 3, 3), 3, seed=0)
        with pytest.raises(ValueError, match="labels must lie"):
            CrossEntropyLoss()(logits, labels + 1)


class TestExpLog:
    def test_hand_example(self):
        loss = ExpLogLoss()(LOGITS, LABELS).item()
        expected = 0.8 * (-math.log(MEAN_DICE)) ** 0.3 + 0.2 * sum(NLL) / 4
        assert loss == pytest.approx(expected, abs=1e-12)

    def test_hand_example_weighted(self):
        loss = ExpLogLoss(gamma=0.5, lambda_dice=0.6, lambda_ce=0.4, class_weights=[1.0, 3.0], include_background=False)
        ce = (3 * NLL[0] + 3 * NLL[1] + NLL[2] + NLL[3]) / 8
        expected = 0.6 * (-math.log(3.8 / 4.8)) ** 0.5 + 0.4 * ce
        assert loss(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-12)

    def test_gradient_is_finite_at_perfect_dice(self):
        # Background-only labels and a confident background prediction: the foreground Dice is
        # 1 / (P + 1) with P ~ 1e-43, exactly 1 in float64.
        logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
        logits[:, 1] = -100.0
        logits.requires_grad_(True)
        loss = ExpLogLoss(include_background=False)
        value = loss(logits, torch.zeros(1, 2, 2, dtype=torch.int64))
        value.backward()
        assert value.item() == pytest.approx(0.0, abs=1e-40)
        assert torch.isfinite(logits.grad).all()

    def test_gamma_must_be_positive(self):
        with pytest.raises(ValueError, match="gamma"):
            ExpLogLoss(gamma=0.0)


class TestDiceCE:
    @pytest.mark.parametrize("shape", [(2, 5, 6), (2, 3, 4, 5)])
    def test_matches_monai(self, shape):
        logits, labels = random_case(shape, 3, seed=5)
        ours = DiceCELoss(lambda_dice=0.7, lambda_ce=1.5)(logits, labels)
        ref = MonaiDiceCELoss(
            softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.7, lambda_ce=1.5
        )(logits, labels.unsqueeze(1))
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    def test_hand_example(self):
        loss = DiceCELoss(lambda_dice=2.0, lambda_ce=0.5)(LOGITS, LABELS).item()
        assert loss == pytest.approx(2.0 * (1 - MEAN_DICE) + 0.5 * sum(NLL) / 4, abs=1e-12)


class TestDistillation:
    def test_hand_example(self):
        # tau = 2: softmax(t / 2) = (1/4, 3/4), softmax(s / 2) = (1/2, 1/2)
        teacher = torch.tensor([0.0, 2 * math.log(3.0)], dtype=torch.float64).view(1, 2, 1, 1).requires_grad_(True)
        student = torch.zeros(1, 2, 1, 1, dtype=torch.float64, requires_grad=True)
        loss = distillation_loss(teacher, student, temperature=2.0)
        assert loss.item() == pytest.approx(4 * math.log(2.0), abs=1e-12)  # -4 (1/4 + 3/4) ln(1/2)
        loss.backward()
        assert teacher.grad is None
        # d/ds = tau^2 / tau * (softmax(s / tau) - softmax(t / tau)) = 2 * (1/4, -1/4)
        torch.testing.assert_close(student.grad.flatten(), torch.tensor([0.5, -0.5], dtype=torch.float64))

    def test_equals_kl_plus_teacher_entropy(self):
        teacher, _ = random_case((2, 4, 3), 5, seed=6)
        student, _ = random_case((2, 4, 3), 5, seed=7)
        tau = 3.0
        p = torch.softmax(teacher / tau, 1)
        pixels = 2 * 4 * 3
        kl = F.kl_div(torch.log_softmax(student / tau, 1), p, reduction="sum") / pixels
        entropy = -(p * torch.log(p)).sum() / pixels
        torch.testing.assert_close(distillation_loss(teacher, student, tau), tau**2 * (kl + entropy))

    def test_errors(self):
        with pytest.raises(ValueError, match="temperature"):
            distillation_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1), temperature=0.0)
        with pytest.raises(ValueError, match="same shape"):
            distillation_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1))


@pytest.mark.parametrize(
    ("loss", "old", "new"),
    [("explog", "do_bg", "include_background"), ("explog", "dice_weight", "lambda_dice"), ("explog", "ce_weight", "lambda_ce")],
)
def test_an_option_spelt_the_old_way_names_its_new_name(loss, old, new):
    from siteflow.config.validation import ConfigError, check_kwargs
    from siteflow.core.registry import LOSSES

    with pytest.raises(ConfigError) as error:
        check_kwargs(LOSSES.get(loss), {old: False if old == "do_bg" else 0.5}, "common.train.loss.kwargs")
    assert str(error.value) == f"common.train.loss.kwargs.{old}: was renamed: use {new!r} (the name MONAI's losses and the metrics use)"
