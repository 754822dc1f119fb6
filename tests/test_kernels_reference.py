"""The pure-PyTorch Dice kernels against hand computations, MONAI and torchmetrics."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceLoss
from torchmetrics.functional.classification import multiclass_stat_scores

from siteflow.kernels import confusion, dice_loss, predict_labels


def monai_dice_loss(logits: torch.Tensor, labels: torch.Tensor, *, include_background=True, batch_dice=False, smooth=1.0):
    """The same loss computed by MONAI (sigmoid for one channel, softmax otherwise)."""
    binary = logits.shape[1] == 1
    loss = DiceLoss(
        sigmoid=binary,
        softmax=not binary,
        to_onehot_y=not binary,
        include_background=include_background or binary,
        batch=batch_dice,
        smooth_nr=smooth,
        smooth_dr=smooth,
    )
    return loss(logits, labels.unsqueeze(1).to(logits.dtype if binary else torch.int64))


def random_case(shape: tuple[int, ...], channels: int, seed: int, dtype=torch.float64):
    """Random logits ``(N, C, *spatial)`` and labels ``(N, *spatial)`` for ``shape = (N, *spatial)``."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(shape[0], channels, *shape[1:], generator=gen, dtype=dtype)
    labels = torch.randint(0, max(channels, 2), shape, generator=gen)
    return logits, labels


# Foreground probabilities and labels of a 2x2 image whose Dice is worked out by hand below.
FG_PROB = torch.tensor([[[0.8, 0.6], [0.3, 0.1]]], dtype=torch.float64)
HAND_LABELS = torch.tensor([[[1, 1], [0, 0]]])
# class 1: I = 0.8 + 0.6 = 1.4, P = 1.8, Y = 2  ->  (2.8 + 1) / (3.8 + 1)
# class 0: I = 0.7 + 0.9 = 1.6, P = 2.2, Y = 2  ->  (3.2 + 1) / (4.2 + 1)
HAND_DICE_FG = 3.8 / 4.8
HAND_DICE_BG = 4.2 / 5.2


def two_channel_logits(fg_prob: torch.Tensor) -> torch.Tensor:
    """Logits ``(N, 2, H, W)`` whose softmax is ``(1 - fg_prob, fg_prob)``."""
    return torch.stack([torch.log1p(-fg_prob), torch.log(fg_prob)], 1)


class TestDiceLoss:
    def test_hand_example(self):
        logits = two_channel_logits(FG_PROB)
        assert dice_loss(logits, HAND_LABELS).item() == pytest.approx(1 - (HAND_DICE_FG + HAND_DICE_BG) / 2, abs=1e-12)
        assert dice_loss(logits, HAND_LABELS, include_background=False).item() == pytest.approx(1 - HAND_DICE_FG, abs=1e-12)

    def test_hand_example_smooth(self):
        logits = two_channel_logits(FG_PROB)
        expected = 1 - (2.8 + 0.5) / (3.8 + 0.5)
        assert dice_loss(logits, HAND_LABELS, include_background=False, smooth=0.5).item() == pytest.approx(expected, abs=1e-12)

    def test_single_channel_is_sigmoid_foreground(self):
        logits = torch.logit(FG_PROB).unsqueeze(1)
        for include_background in (True, False):
            loss = dice_loss(logits, HAND_LABELS, include_background=include_background)
            assert loss.item() == pytest.approx(1 - HAND_DICE_FG, abs=1e-12)

    @pytest.mark.parametrize("seed", range(12))
    def test_matches_monai(self, seed):
        gen = torch.Generator().manual_seed(1000 + seed)
        dims = 2 + seed % 2
        spatial = tuple(int(s) for s in torch.randint(3, 12, (dims,), generator=gen))
        samples = int(torch.randint(1, 4, (), generator=gen))
        channels = 2 + seed % 7
        logits, labels = random_case((samples, *spatial), channels, seed)
        for include_background in (True, False):
            for batch_dice in (True, False):
                for smooth in (1.0, 1e-5):
                    ours = dice_loss(logits, labels, include_background=include_background, batch_dice=batch_dice, smooth=smooth)
                    ref = monai_dice_loss(logits, labels, include_background=include_background, batch_dice=batch_dice, smooth=smooth)
                    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 4, 5)])
    def test_single_channel_matches_monai(self, shape):
        logits, labels = random_case(shape, 1, seed=3)
        for batch_dice in (True, False):
            ours = dice_loss(logits, labels, batch_dice=batch_dice)
            ref = monai_dice_loss(logits, labels, batch_dice=batch_dice)
            torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    def test_class_absent_from_a_sample(self):
        logits, labels = random_case((2, 6, 5), 4, seed=7)
        labels[0] = torch.where(labels[0] == 3, 0, labels[0])  # class 3 absent from sample 0
        labels[1] = 2  # only class 2 in sample 1
        for include_background in (True, False):
            ours = dice_loss(logits, labels, include_background=include_background)
            torch.testing.assert_close(ours, monai_dice_loss(logits, labels, include_background=include_background), rtol=1e-12, atol=1e-12)
        # An absent class c contributes 1 / (P_c + 1): check sample 1, class 0, by hand.
        probs = torch.softmax(logits[1:], 1)
        p = probs.flatten(2).sum(-1)[0]
        dice = torch.stack([1 / (p[0] + 1), 1 / (p[1] + 1), (2 * probs[0, 2].sum() + 1) / (p[2] + 30 + 1), 1 / (p[3] + 1)])
        torch.testing.assert_close(dice_loss(logits[1:], labels[1:]), 1 - dice.mean())

    @pytest.mark.parametrize("ignore_index", [255, 0])
    @pytest.mark.parametrize("batch_dice", [False, True])
    def test_ignore_index_equals_loss_without_those_pixels(self, ignore_index, batch_dice):
        logits, labels = random_case((3, 6, 7), 3, seed=11)
        if ignore_index == 255:  # a label outside the classes, in uint8 labels
            ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(5)) < 0.3
            labels = torch.where(ignored, ignore_index, labels).to(torch.uint8)
        else:  # a class: its pixels are left out, its channel stays
            ignored = labels == ignore_index
        ours = dice_loss(logits, labels, batch_dice=batch_dice, ignore_index=ignore_index)

        # The kept pixels of each sample as a (1, C, K, 1) image.
        kept = [logits[n][:, ~ignored[n]].unsqueeze(0).unsqueeze(-1) for n in range(3)]
        kept_labels = [labels[n][~ignored[n]].long().view(1, -1, 1) for n in range(3)]
        if batch_dice:
            ref = monai_dice_loss(torch.cat(kept, 2), torch.cat(kept_labels, 1))
        else:
            ref = torch.stack([monai_dice_loss(x, y) for x, y in zip(kept, kept_labels)]).mean()
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)

    def test_all_pixels_ignored(self):
        logits, labels = random_case((2, 4, 4), 3, seed=2)
        loss = dice_loss(logits, torch.full_like(labels, -1), ignore_index=-1)
        assert loss.item() == 0.0  # every Dice is smooth / smooth

    def test_uint8_labels(self):
        logits, labels = random_case((2, 5, 6, 3), 4, seed=4)
        torch.testing.assert_close(dice_loss(logits, labels.to(torch.uint8)), dice_loss(logits, labels), rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_inputs_close_to_float32(self, dtype):
        logits, labels = random_case((2, 16, 16), 4, seed=6, dtype=torch.float32)
        half = logits.to(dtype)
        loss = dice_loss(half, labels, include_background=False)
        assert loss.dtype == torch.float32
        # Exact up to the rounding of the logits themselves ...
        torch.testing.assert_close(loss, dice_loss(half.float(), labels, include_background=False), rtol=1e-6, atol=1e-6)
        # ... and close to the float32 loss.
        torch.testing.assert_close(loss, dice_loss(logits, labels, include_background=False), rtol=0, atol=1e-2)

    def test_result_dtypes(self):
        logits, labels = random_case((1, 3, 3), 2, seed=0)
        assert dice_loss(logits, labels).dtype == torch.float64
        assert dice_loss(logits.float(), labels).dtype == torch.float32

    @pytest.mark.parametrize(
        ("channels", "kwargs"),
        [
            (3, {}),
            (3, {"include_background": False, "batch_dice": True}),
            (4, {"ignore_index": 9}),
            (1, {"smooth": 1e-3}),
        ],
    )
    def test_gradcheck(self, channels, kwargs):
        logits, labels = random_case((2, 3, 4), channels, seed=8)
        if "ignore_index" in kwargs:
            labels[0, 0] = kwargs["ignore_index"]
        logits.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x: dice_loss(x, labels, **kwargs), (logits,))

    def test_3d_gradcheck(self):
        logits, labels = random_case((1, 2, 3, 3), 3, seed=9)
        logits.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x: dice_loss(x, labels, include_background=False), (logits,))

    def test_non_contiguous_inputs(self):
        logits, labels = random_case((2, 6, 8), 3, seed=10)
        strided_logits = logits.permute(0, 1, 3, 2)[..., ::2]  # (2, 3, 8, 3)
        strided_labels = labels.transpose(1, 2)[..., ::2]
        assert not strided_logits.is_contiguous() and not strided_labels.is_contiguous()
        torch.testing.assert_close(
            dice_loss(strided_logits, strided_labels),
            dice_loss(strided_logits.contiguous(), strided_labels.contiguous()),
            rtol=0,
            atol=0,
        )

    def test_errors(self):
        logits, labels = random_case((2, 4, 4), 3, seed=1)
        with pytest.raises(TypeError, match="logits"):
            dice_loss(logits.long(), labels)
        with pytest.raises(TypeError, match="labels"):
            dice_loss(logits, labels.float())
        with pytest.raises(TypeError, match="labels"):
            dice_loss(logits, labels.int())
        with pytest.raises(ValueError, match="labels must have shape"):
            dice_loss(logits, labels[:, :3])
        with pytest.raises(ValueError, match="logits must have shape"):
            dice_loss(logits[:, :, 0], labels[:, 0])
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*found 3"):
            dice_loss(logits, torch.where(labels == 2, 3, labels))
        with pytest.raises(ValueError, match="found -1"):
            dice_loss(logits, torch.full_like(labels, -1))
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            dice_loss(logits[:, :1], labels)  # single channel: labels must be binary


class TestConfusion:
    def test_hand_example(self):
        pred = torch.tensor([[[0, 1], [2, 2]]])
        labels = torch.tensor([[[0, 2], [2, 1]]])
        tp, fp, fn = confusion(pred, labels, 3)
        assert tp.tolist() == [[1, 0, 1]]
        assert fp.tolist() == [[0, 1, 1]]
        assert fn.tolist() == [[0, 1, 1]]
        assert tp.dtype == fp.dtype == fn.dtype == torch.int64

    def test_hand_example_ignore_index(self):
        pred = torch.tensor([[[0, 1], [2, 2]]])
        labels = torch.tensor([[[0, 255], [2, 1]]], dtype=torch.uint8)
        tp, fp, fn = confusion(pred, labels, 3, ignore_index=255)
        assert tp.tolist() == [[1, 0, 1]]
        assert fp.tolist() == [[0, 0, 1]]
        assert fn.tolist() == [[0, 1, 0]]

    def test_logits_are_argmaxed(self):
        logits = two_channel_logits(FG_PROB)  # predicts [[1, 1], [0, 0]]
        labels = torch.tensor([[[1, 0], [1, 0]]])
        tp, fp, fn = confusion(logits, labels, 2)
        assert tp.tolist() == [[1, 1]] and fp.tolist() == [[1, 1]] and fn.tolist() == [[1, 1]]

    def test_single_channel_logits(self):
        logits = torch.tensor([[[[2.0, -1.0], [0.0, 0.5]]]])  # logit > 0 -> [[1, 0], [0, 1]]
        labels = torch.tensor([[[1, 1], [0, 0]]])
        tp, fp, fn = confusion(logits, labels, 2)
        assert tp.tolist() == [[1, 1]] and fp.tolist() == [[1, 1]] and fn.tolist() == [[1, 1]]

    @pytest.mark.parametrize("shape", [(3, 9, 7), (2, 5, 4, 6)])
    @pytest.mark.parametrize("ignore_index", [None, 255])
    @pytest.mark.parametrize("from_logits", [True, False])
    def test_matches_torchmetrics(self, shape, ignore_index, from_logits):
        channels = 5
        logits, labels = random_case(shape, channels, seed=12, dtype=torch.float32)
        if ignore_index is not None:
            labels[:, 0] = ignore_index
        preds = logits if from_logits else logits.argmax(1)
        tp, fp, fn = confusion(preds, labels, channels, ignore_index=ignore_index)
        scores = multiclass_stat_scores(
            logits.argmax(1), labels, channels, average=None, multidim_average="samplewise", ignore_index=ignore_index
        )
        assert torch.equal(tp, scores[..., 0])
        assert torch.equal(fp, scores[..., 1])
        assert torch.equal(fn, scores[..., 3])

    def test_matches_one_hot_counts(self):
        logits, labels = random_case((2, 6, 5), 4, seed=13)
        labels[0, 0] = 99
        pred = torch.nn.functional.one_hot(logits.argmax(1), 4).bool()
        true = torch.nn.functional.one_hot(labels.clamp_max(3), 4).bool() & (labels != 99).unsqueeze(-1)
        counted = (labels != 99).unsqueeze(-1)
        tp, fp, fn = confusion(logits, labels, 4, ignore_index=99)
        assert torch.equal(tp, (pred & true).sum((1, 2)))
        assert torch.equal(fp, (pred & ~true & counted).sum((1, 2)))
        assert torch.equal(fn, (~pred & true).sum((1, 2)))
        # Every counted pixel is one TP or FN, and one TP or FP.
        assert torch.equal((tp + fn).sum(1), counted.sum((1, 2, 3)))
        assert torch.equal((tp + fp).sum(1), counted.sum((1, 2, 3)))

    def test_ties_take_the_first_class(self):
        logits = torch.zeros(1, 3, 1, 2)
        assert predict_labels(logits, 3).tolist() == [[[0, 0]]]

    def test_errors(self):
        logits, labels = random_case((2, 4, 4), 3, seed=1)
        with pytest.raises(ValueError, match="3 channels, but num_classes is 4"):
            confusion(logits, labels, 4)
        with pytest.raises(ValueError, match="num_classes is 3"):
            confusion(logits[:, :1], labels, 3)
        with pytest.raises(ValueError, match="logits_or_pred must lie"):
            confusion(logits.argmax(1) + 1, labels, 3)
        with pytest.raises(TypeError, match="logits_or_pred"):
            confusion(logits.argmax(1).int(), labels, 3)
        with pytest.raises(ValueError, match="labels must have shape"):
            confusion(logits, labels[0], 3)
        with pytest.raises(ValueError, match="labels must lie"):
            confusion(logits, labels + 1, 3)
        with pytest.raises(ValueError, match="num_classes"):
            confusion(logits, labels, 1)

