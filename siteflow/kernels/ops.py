"""The Dice kernels as called by siteflow: the compiled ``siteflow._C`` where it serves the inputs,
the pure-PyTorch reference otherwise.

``siteflow._C`` (built from ``csrc/`` by ``setup.py``) runs CPU tensors, and CUDA tensors when it
was built with CUDA. Any other case (the extension not built, a CUDA tensor with a CPU-only
build, another device) runs :mod:`siteflow.kernels.reference`, with one warning per process that
says why. Setting the environment variable ``SITEFLOW_DISABLE_EXTENSION=1`` before siteflow is
imported hides the extension (tests, debugging).

Both paths check their arguments with the same functions and give the same errors; the compiled
path checks label values inside the kernel and, when one is out of range, lets the reference's
checks raise the error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from siteflow.kernels import reference
from siteflow.kernels.reference import check_labels, check_logits, check_prediction

BUILD_HINT = (
    "build it with `pip install --no-build-isolation --no-deps -e .` in the repository "
    "(or `make setup`), which needs a C++ compiler"
)

_C = None
_unavailable: str | None = None
if os.environ.get("SITEFLOW_DISABLE_EXTENSION", "").strip() not in ("", "0"):
    _unavailable = "siteflow._C is disabled by SITEFLOW_DISABLE_EXTENSION"
else:
    try:
        from siteflow import _C  # type: ignore[attr-defined, no-redef]
    except ImportError as error:
        _unavailable = f"siteflow._C is not built or cannot be loaded ({error}); {BUILD_HINT}"

_warned = False


def backend() -> str:
    """``"compiled"`` when siteflow._C is loaded, ``"reference"`` otherwise."""
    return "reference" if _C is None else "compiled"


def cuda_built() -> bool:
    """Whether siteflow._C is loaded and has its CUDA kernels."""
    return _C is not None and bool(_C.with_cuda)


def _fallback_reason(device: torch.device) -> str | None:
    """Why ``device``'s tensors run the reference, or None when the compiled kernels serve them."""
    if _C is None:
        return _unavailable
    if device.type == "cpu" or (device.type == "cuda" and _C.with_cuda):
        return None
    if device.type == "cuda":
        return (
            "siteflow._C was built without CUDA (torch was CPU-only or nvcc was missing); "
            f"{BUILD_HINT} with a CUDA torch and nvcc"
        )
    return f"siteflow._C has no kernels for {device.type} tensors"


def _use_compiled(device: torch.device) -> bool:
    global _warned
    reason = _fallback_reason(device)
    if reason is None:
        return True
    if not _warned:
        _warned = True
        warnings.warn(f"siteflow.kernels: using the slower pure-PyTorch reference kernels: {reason}", stacklevel=3)
    return False


class _DiceLoss(torch.autograd.Function):
    """The fused soft Dice loss; the backward recomputes the softmax from the logits."""

    @staticmethod
    def forward(ctx, logits, labels, include_background, batch_dice, smooth, ignore_index):  # type: ignore[override]
        loss, coef, status = _C.dice_forward(logits, labels, include_background, batch_dice, smooth, ignore_index)
        if status:
            # Raises the reference's error for the value out of range.
            check_labels(labels, labels.shape, max(logits.shape[1], 2), ignore_index)
            raise ValueError("labels hold a value outside the classes")  # not reached
        ctx.ignore_index = ignore_index
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(logits, labels, coef)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):  # type: ignore[override]
        logits, labels, coef = ctx.saved_tensors
        grad = _C.dice_backward(logits, labels, coef, grad_loss, ctx.ignore_index)
        return grad, None, None, None, None, None


def dice_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    include_background: bool = True,
    batch_dice: bool = False,
    smooth: float = 1.0,
    ignore_index: int | None = None,
) -> Tensor:
    """Soft Dice loss of logits against integer labels; see :func:`siteflow.kernels.reference.dice_loss`.

    Args:
        logits: ``(N, C, *spatial)`` float16, bfloat16, float32 or float64 (2D or 3D).
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, max(C, 2))`` or ``ignore_index``.
        include_background: keep class 0 in the mean (ignored for ``C == 1``, a sigmoid output).
        batch_dice: pool the sums over the batch instead of averaging per-sample Dice.
        smooth: added to numerator and denominator.
        ignore_index: label value of pixels to leave out.

    Returns:
        Scalar tensor (float64 for float64 logits, float32 otherwise), differentiable with
        respect to ``logits``.
    """
    check_logits(logits)
    check_labels(
        labels,
        logits.shape[:1] + logits.shape[2:],
        max(logits.shape[1], 2),
        ignore_index,
        device=logits.device,
        check_range=False,
    )
    if not _use_compiled(logits.device):
        return reference.dice_loss(
            logits, labels, include_background=include_background, batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index
        )
    return _DiceLoss.apply(logits, labels, bool(include_background), bool(batch_dice), float(smooth), _index(ignore_index))


def confusion(
    logits_or_pred: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample, per-class TP, FP and FN pixel counts; see :func:`siteflow.kernels.reference.confusion`.

    Args:
        logits_or_pred: floating logits ``(N, C, *spatial)`` (argmax over ``C``; for ``C == 1``,
            ``logit > 0``) or an int64/uint8 prediction ``(N, *spatial)``.
        labels: ``(N, *spatial)`` int64 or uint8, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: number of classes, at least 2.
        ignore_index: label value of pixels that count nowhere.

    Returns:
        ``(tp, fp, fn)``, each int64 ``(N, num_classes)``.
    """
    shape = check_prediction(logits_or_pred, num_classes, check_range=False)
    check_labels(
        labels,
        shape,
        num_classes,
        ignore_index,
        device=logits_or_pred.device,
        device_of="logits_or_pred",
        check_range=False,
    )
    if not _use_compiled(logits_or_pred.device):
        return reference.confusion(logits_or_pred, labels, num_classes, ignore_index=ignore_index)
    tp, fp, fn, status = _C.confusion(logits_or_pred, labels, int(num_classes), _index(ignore_index))
    if status:
        # Raises the reference's error for the value out of range (the prediction's first).
        reference.confusion(logits_or_pred, labels, num_classes, ignore_index=ignore_index)
        raise ValueError("logits_or_pred or labels hold a value outside the classes")  # not reached
    return tp, fp, fn


def _index(ignore_index: int | None) -> int | None:
    """ignore_index as a Python int (or None), rejecting values the kernels cannot compare."""
    if ignore_index is None:
        return None
    value = int(ignore_index)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    return value


def weighted_sum(tensors: Sequence[Tensor], weights: Sequence[float], *, out: Tensor | None = None) -> Tensor:
    """``sum_i weights[i] * tensors[i]`` (federated aggregation), in one pass over memory in
    siteflow._C for CPU float32/float64 tensors; the reference otherwise (see
    :func:`siteflow.kernels.reference.weighted_sum` for the semantics). ``out``: a contiguous
    tensor of the result's shape and dtype to write into, reused across rounds by a server
    (a fresh result costs the page faults of new memory)."""
    first = tensors[0] if tensors else None
    if (
        first is not None
        and first.dtype in (torch.float32, torch.float64)
        and first.device.type == "cpu"
        and len(tensors) == len(weights)
        and all(t.shape == first.shape and t.dtype == first.dtype and t.device == first.device for t in tensors)
        and _use_compiled(first.device)
    ):
        return _C.weighted_sum(list(tensors), [float(w) for w in weights], out)
    result = reference.weighted_sum(tensors, weights)
    return result if out is None else out.copy_(result)
