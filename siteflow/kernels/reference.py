"""Pure-PyTorch reference implementations of the Dice kernels.

These functions define the exact semantics that compiled kernels must reproduce: they are
written for clarity and exactness (they are correct in float64) rather than for speed.

Shapes: ``N`` samples, ``C`` channels (classes), ``*spatial`` two or three spatial dimensions.
Labels are integer class maps of shape ``(N, *spatial)``; a label equal to ``ignore_index``
marks a pixel that counts nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int64, torch.uint8)  # of labels and of hard predictions


def check_logits(logits: Tensor, name: str = "logits") -> None:
    """Check that ``logits`` is a floating ``(N, C, H, W)`` or ``(N, C, D, H, W)`` tensor."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    if logits.dim() not in (4, 5):
        raise ValueError(f"{name} must have shape (N, C, H, W) or (N, C, D, H, W), got {tuple(logits.shape)}")
    if logits.shape[1] < 1:
        raise ValueError(f"{name} must have at least one channel, got shape {tuple(logits.shape)}")


def check_labels(
    labels: Tensor,
    shape: torch.Size,
    num_classes: int,
    ignore_index: int | None,
    *,
    device: torch.device | None = None,
    device_of: str = "the logits",
    check_range: bool = True,
) -> None:
    """Check that ``labels`` is an int64/uint8 map of ``shape`` with values in ``[0, num_classes)``.

    Pixels equal to ``ignore_index`` may hold any value. With ``device``, the labels must be on it
    (``device_of`` names whose device it is in the message). ``check_range=False`` leaves out the
    value check (a pass over the labels; the compiled kernels check the values themselves).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in INDEX_DTYPES:
        raise TypeError(f"labels must be int64 or uint8, got {labels.dtype}")
    if labels.shape != shape:
        raise ValueError(f"labels must have shape {tuple(shape)}, got {tuple(labels.shape)}")
    if device is not None and labels.device != device:
        raise ValueError(f"labels must be on the device of {device_of} ({device}), got {labels.device}")
    if check_range:
        _check_range(labels, "labels", num_classes, ignore_index)


def _check_range(values: Tensor, name: str, num_classes: int, ignore_index: int | None) -> None:
    """Raise ValueError if a value of ``values`` (other than ``ignore_index``) is outside ``[0, num_classes)``."""
    values = values.long()
    counted = values if ignore_index is None else values[values != ignore_index]
    if counted.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(counted))
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or equal ignore_index={ignore_index}")
        raise ValueError(f"{name} must lie in {allowed}, found {bad}")


def predict_labels(logits_or_pred: Tensor, num_classes: int) -> Tensor:
    """The hard prediction of a model output, as an int64 map.

    Args:
        logits_or_pred: floating logits ``(N, C, *spatial)``, reduced by argmax over ``C`` with
            ``C == num_classes``; for ``C == 1`` (a sigmoid output, ``num_classes == 2``) the
            prediction is ``logit > 0``. Or an int64/uint8 prediction ``(N, *spatial)`` with
            values in ``[0, num_classes)``, returned as int64.
        num_classes: number of classes, at least 2.

    Returns:
        int64 tensor ``(N, *spatial)``.
    """
    check_prediction(logits_or_pred, num_classes)
    if logits_or_pred.is_floating_point():
        if logits_or_pred.shape[1] == 1:
            return (logits_or_pred[:, 0] > 0).long()
        # torch.max(...).indices is much faster than torch.argmax on CPU; both return the first maximum.
        return torch.max(logits_or_pred, 1).indices
    return logits_or_pred.long()


def check_prediction(logits_or_pred: Tensor, num_classes: int, *, check_range: bool = True) -> torch.Size:
    """Check the input of :func:`predict_labels`; returns the shape ``(N, *spatial)`` of the prediction.

    ``check_range=False`` leaves out the value check of an integer prediction.
    """
    if not isinstance(logits_or_pred, Tensor):
        raise TypeError(f"logits_or_pred must be a torch.Tensor, got {type(logits_or_pred).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if logits_or_pred.is_floating_point():
        check_logits(logits_or_pred, "logits_or_pred")
        channels = logits_or_pred.shape[1]
        if channels == 1:
            if num_classes != 2:
                raise ValueError(f"single-channel logits_or_pred is binary, but num_classes is {num_classes}")
        elif channels != num_classes:
            raise ValueError(f"logits_or_pred has {channels} channels, but num_classes is {num_classes}")
        return logits_or_pred.shape[:1] + logits_or_pred.shape[2:]
    if logits_or_pred.dtype not in INDEX_DTYPES:
        raise TypeError(f"logits_or_pred must be floating logits or an int64/uint8 prediction, got {logits_or_pred.dtype}")
    if logits_or_pred.dim() not in (3, 4):
        raise ValueError(
            f"an integer logits_or_pred must have shape (N, H, W) or (N, D, H, W), got {tuple(logits_or_pred.shape)}"
        )
    if check_range:
        _check_range(logits_or_pred, "logits_or_pred", num_classes, None)
    return logits_or_pred.shape


def dice_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    include_background: bool = True,
    batch_dice: bool = False,
    smooth: float = 1.0,
    ignore_index: int | None = None,
) -> Tensor:
    """Soft Dice loss of logits against integer labels.

    Probabilities are ``softmax(logits)`` over ``C``; for ``C == 1`` they are ``sigmoid(logits)``,
    the single channel being the foreground class 1 of labels in ``{0, 1}``. Over the pixels whose
    label is not ``ignore_index``, per sample (or over the whole batch when ``batch_dice``) and per
    class ``c``: ``I = sum(p_c * y_c)``, ``P = sum(p_c)``, ``Y = sum(y_c)`` with ``y`` the one-hot
    labels, and ``dice_c = (2 I + smooth) / (P + Y + smooth)``. The loss is ``1 - mean(dice)`` over
    samples (or the batch) and classes, class 0 dropped when ``include_background`` is False and ``C > 1``.

    Args:
        logits: ``(N, C, *spatial)`` float16, bfloat16, float32 or float64.
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, max(C, 2))`` or ``ignore_index``.
        include_background: keep class 0 in the mean (ignored for ``C == 1``).
        batch_dice: pool the sums over the batch instead of averaging per-sample Dice.
        smooth: added to numerator and denominator.
        ignore_index: label value of pixels to leave out.

    Returns:
        Scalar tensor, float64 for float64 logits and float32 otherwise (half inputs are
        accumulated in float32). Differentiable with respect to ``logits``.
    """
    check_logits(logits)
    channels = logits.shape[1]
    check_labels(labels, logits.shape[:1] + logits.shape[2:], max(channels, 2), ignore_index, device=logits.device)

    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype).flatten(2)  # (N, C, S)
    y = labels.flatten(1).long().unsqueeze(1)  # (N, 1, S)
    ignored = None if ignore_index is None else y == ignore_index
    if ignored is not None:
        y = y.masked_fill(ignored, 0)

    if channels == 1:
        probs = torch.sigmoid(x)
        onehot = (y == 1).to(dtype)
    else:
        probs = torch.softmax(x, 1)
        onehot = torch.zeros_like(probs).scatter_(1, y, 1.0)
    if ignored is not None:
        probs = probs.masked_fill(ignored, 0)
        onehot = onehot.masked_fill(ignored, 0)

    dims = (0, 2) if batch_dice else (2,)
    intersection = (probs * onehot).sum(dims)  # (N, C), or (C,) when batch_dice
    predicted = probs.sum(dims)
    actual = onehot.sum(dims)
    dice = (2 * intersection + smooth) / (predicted + actual + smooth)
    if not include_background and channels > 1:
        dice = dice[..., 1:]
    return 1 - dice.mean()


def confusion(
    logits_or_pred: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample, per-class true positive, false positive and false negative pixel counts.

    Args:
        logits_or_pred: floating logits ``(N, C, *spatial)`` or an integer prediction
            ``(N, *spatial)``; see :func:`predict_labels`.
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes, at least 2.
        ignore_index: label value of pixels that count nowhere.

    Returns:
        ``(tp, fp, fn)``, each int64 ``(N, num_classes)``.
    """
    pred = predict_labels(logits_or_pred, num_classes)
    check_labels(labels, pred.shape, num_classes, ignore_index, device=pred.device, device_of="logits_or_pred")

    samples = pred.shape[0]
    pred = pred.flatten(1)
    true = labels.flatten(1).long()
    # One bin per (sample, true class, predicted class).
    sample_offset = torch.arange(samples, device=pred.device).unsqueeze(1) * num_classes * num_classes
    bins = sample_offset + true * num_classes + pred
    if ignore_index is not None:
        bins = bins[true != ignore_index]
    matrix = torch.bincount(bins.flatten(), minlength=samples * num_classes * num_classes)
    matrix = matrix.view(samples, num_classes, num_classes)  # [n, true, predicted]

    tp = matrix.diagonal(dim1=1, dim2=2)
    fp = matrix.sum(1) - tp
    fn = matrix.sum(2) - tp
    return tp.contiguous(), fp, fn


def weighted_sum(tensors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``sum_i weights[i] * tensors[i]`` for tensors of one shape and floating dtype,
    accumulated in float32 (float64 for float64 inputs), returned in the inputs' dtype."""
    if not tensors or len(tensors) != len(weights):
        raise ValueError(f"weighted_sum needs one weight per tensor, got {len(tensors)} tensors and {len(weights)} weights")
    first = tensors[0]
    accumulate = torch.float64 if first.dtype == torch.float64 else torch.float32
    total = torch.zeros(first.shape, dtype=accumulate, device=first.device)
    for weight, tensor in zip(weights, tensors):
        if tensor.shape != first.shape:
            raise ValueError(f"weighted_sum: shapes {tuple(tensor.shape)} and {tuple(first.shape)} differ")
        total.add_(tensor.to(accumulate), alpha=float(weight))
    return total.to(first.dtype)
