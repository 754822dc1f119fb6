"""The compiled Dice kernels (siteflow._C, from csrc/) against the pure-PyTorch references.

siteflow's set-up (``make setup``) builds the extension, so a missing one fails
``test_extension_is_built``; the other tests of the compiled ops then skip. The CUDA tests skip
where there is no GPU, the nvcc test where there is no nvcc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from siteflow import kernels
from siteflow.kernels import ops, reference

ROOT = Path(__file__).resolve().parent.parent
_C = ops._C
DISABLED = os.environ.get("SITEFLOW_DISABLE_EXTENSION", "").strip() not in ("", "0")
compiled = pytest.mark.skipif(_C is None, reason="siteflow._C is not built")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@contextmanager
def block_pixels(pixels: int):
    """Run the CPU kernels with blocks of `pixels` pixels (many blocks, ragged tails)."""
    _C.set_block_pixels(pixels)
    try:
        yield
    finally:
        _C.set_block_pixels(0)


@contextmanager
def cpu_isa(name: str):
    """Run the CPU kernels compiled for the baseline instruction set ("default") or the best one."""
    assert _C.set_cpu_isa(name)
    try:
        yield
    finally:
        _C.set_cpu_isa("auto")


def make_case(seed: int, spatial: tuple[int, ...], channels: int, *, samples: int = 2, dtype=torch.float64,
              label_dtype=torch.int64, ignore_index: int | None = None, device="cpu"):
    """Logits (N, C, *spatial) with some large values, labels with an absent class and ignored pixels."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(samples, channels, *spatial, generator=gen, dtype=torch.float64)
    logits[..., 0] *= 10  # some large logits: probabilities near 0 and 1
    classes = max(channels, 2)
    labels = torch.randint(0, classes, (samples, *spatial), generator=gen)
    if classes > 2:
        labels[0] = torch.where(labels[0] == classes - 1, 0, labels[0])  # class C-1 absent from sample 0
    if ignore_index is not None:
        ignored = torch.rand(labels.shape, generator=gen) < 0.2
        labels = torch.where(ignored, torch.tensor(ignore_index), labels)
    return logits.to(device=device, dtype=dtype), labels.to(device=device, dtype=label_dtype)


def loss_and_grad(fn, logits, labels, **kwargs):
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x, labels, **kwargs)
    loss.backward()
    return loss.detach(), x.grad


def assert_close_relative(actual, expected, rtol):
    """Elementwise within rtol of the largest magnitude of expected (gradients have near-zero entries)."""
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


# (spatial, channels, options, label dtype, ignore_index)
LOSS_CASES = [
    ((5, 7), 1, {}, torch.int64, None),
    ((9, 4), 1, {"batch_dice": True, "smooth": 1e-3}, torch.uint8, 255),
    ((3, 5, 7), 1, {}, torch.int64, -1),
    ((13, 11), 2, {}, torch.int64, None),
    ((13, 11), 2, {"include_background": False}, torch.uint8, None),
    ((6, 5, 3), 3, {"batch_dice": True}, torch.int64, None),
    ((17, 9), 3, {"include_background": False, "batch_dice": True}, torch.uint8, 255),
    ((4, 7, 5), 4, {"smooth": 0.0}, torch.int64, None),
    ((33, 31), 4, {"include_background": False}, torch.int64, 0),  # a class as ignore_index: its pixels drop out
    ((5, 6, 7), 5, {}, torch.uint8, None),
    ((21, 23), 6, {"smooth": 1e-5}, torch.int64, -100),
    ((7, 3, 9), 7, {"include_background": False, "batch_dice": True}, torch.uint8, None),
    ((19, 17), 8, {}, torch.int64, 3),
    ((3, 4, 5), 8, {"batch_dice": True}, torch.uint8, 200),
]


@compiled
@pytest.mark.parametrize("blocks", [0, 37], ids=["auto-blocks", "blocks-of-37"])
@pytest.mark.parametrize("index", range(len(LOSS_CASES)))
def test_dice_loss_matches_reference(index, blocks):
    spatial, channels, options, label_dtype, ignore_index = LOSS_CASES[index]
    with block_pixels(blocks):
        for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            logits, labels = make_case(index, spatial, channels, dtype=dtype, label_dtype=label_dtype,
                                       ignore_index=ignore_index, samples=1 + index % 3)
            loss, grad = loss_and_grad(kernels.dice_loss, logits, labels, ignore_index=ignore_index, **options)
            ref_loss, ref_grad = loss_and_grad(
                reference.dice_loss, logits, labels, ignore_index=ignore_index, **options
            )
            assert loss.dtype == ref_loss.dtype and loss.shape == ()
            torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=rtol)
            assert grad.dtype == logits.dtype
            assert_close_relative(grad, ref_grad, rtol)


@compiled
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_baseline_instruction_set_matches_reference(channels):
    logits, labels = make_case(5, (23, 19), channels, dtype=torch.float32, ignore_index=255, label_dtype=torch.uint8)
    with cpu_isa("default"):
        assert _C.cpu_isa() == "default"
        loss, grad = loss_and_grad(kernels.dice_loss, logits, labels, ignore_index=255)
        counts = kernels.confusion(logits, labels, max(channels, 2), ignore_index=255)
    ref_loss, ref_grad = loss_and_grad(reference.dice_loss, logits, labels, ignore_index=255)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert_close_relative(grad, ref_grad, 1e-5)
    for ours, ref in zip(counts, reference.confusion(logits, labels, max(channels, 2), ignore_index=255)):
        assert torch.equal(ours, ref)


@compiled
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 4])
def test_half_inputs_accumulate_in_float32(dtype, channels):
    logits, labels = make_case(7, (31, 29), channels, dtype=torch.float32)
    half = logits.to(dtype)
    half[0, 0, 0, :3] = torch.tensor([0.0, -0.0, 6e-6])  # zeros and a subnormal half
    loss, grad = loss_and_grad(kernels.dice_loss, half, labels, include_background=False)
    ref_loss, ref_grad = loss_and_grad(reference.dice_loss, half, labels, include_background=False)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # Both round a float32 gradient to the half type: equal to about one unit in the last place.
    ulp = 2.0**-10 if dtype == torch.float16 else 2.0**-7
    assert_close_relative(grad.float(), ref_grad.float(), 2 * ulp)
    num_classes = max(channels, 2)
    for ours, ref in zip(kernels.confusion(half, labels, num_classes), reference.confusion(half, labels, num_classes)):
        assert torch.equal(ours, ref)


@compiled
@pytest.mark.parametrize(
    ("spatial", "channels", "options"),
    [
        ((3, 4), 1, {"smooth": 1e-3}),
        ((4, 3), 3, {}),
        ((3, 5), 4, {"include_background": False, "batch_dice": True}),
        ((2, 3, 3), 3, {"include_background": False}),
        ((3, 4), 4, {"ignore_index": 9}),
    ],
)
def test_gradcheck(spatial, channels, options):
    logits, labels = make_case(11, spatial, channels, label_dtype=torch.uint8)
    if "ignore_index" in options:
        labels[0, 0] = options["ignore_index"]
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kernels.dice_loss(x, labels, **options), (logits,))


@compiled
def test_non_contiguous_inputs():
    logits, labels = make_case(12, (10, 12), 3)
    strided_logits = logits.permute(0, 1, 3, 2)[..., ::2]  # (2, 3, 12, 5)
    strided_labels = labels.transpose(1, 2)[..., ::2]
    channels_last = logits.to(memory_format=torch.channels_last)
    assert not strided_logits.is_contiguous() and not strided_labels.is_contiguous()
    for x, y in ((strided_logits, strided_labels), (channels_last, labels)):
        loss, grad = loss_and_grad(kernels.dice_loss, x, y)
        ref_loss, ref_grad = loss_and_grad(reference.dice_loss, x.contiguous(), y.contiguous())
        torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
        assert_close_relative(grad, ref_grad, 1e-12)
        for ours, ref in zip(kernels.confusion(x, y, 3), reference.confusion(x.contiguous(), y.contiguous(), 3)):
            assert torch.equal(ours, ref)


@compiled
def test_results_do_not_depend_on_the_number_of_threads():
    logits, labels = make_case(13, (64, 96), 4, dtype=torch.float32, samples=3)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(loss_and_grad(kernels.dice_loss, logits, labels, batch_dice=True))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@compiled
@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (0, 3, 4, 5)])
def test_empty_inputs(shape):
    logits = torch.randn(shape, dtype=torch.float64)
    labels = torch.zeros(shape[:1] + shape[2:], dtype=torch.int64)
    for options in ({}, {"batch_dice": True}):
        loss, grad = loss_and_grad(kernels.dice_loss, logits, labels, **options)
        ref_loss, ref_grad = loss_and_grad(reference.dice_loss, logits, labels, **options)
        torch.testing.assert_close(loss, ref_loss, equal_nan=True)
        assert grad.shape == logits.shape
    for ours, ref in zip(kernels.confusion(logits, labels, 3), reference.confusion(logits, labels, 3)):
        assert torch.equal(ours, ref)


# (spatial, channels/classes, logits dtype or None for an integer prediction, pred dtype, label dtype, ignore_index)
CONFUSION_CASES = [
    ((7, 9), 1, torch.float32, None, torch.int64, None),
    ((5, 4, 3), 1, torch.float64, None, torch.uint8, 255),
    ((11, 13), 2, torch.float32, None, torch.uint8, None),
    ((6, 7, 5), 3, torch.bfloat16, None, torch.int64, -1),
    ((31, 37), 5, torch.float16, None, torch.int64, 0),
    ((9, 8, 7), 8, torch.float32, None, torch.uint8, 200),
    ((15, 17), 11, torch.float64, None, torch.int64, None),
    ((19, 23), 4, None, torch.int64, torch.int64, None),
    ((5, 6, 7), 6, None, torch.uint8, torch.uint8, 255),
    ((13, 3), 2, None, torch.uint8, torch.int64, -5),
    ((40, 41), 12, None, torch.int64, torch.uint8, None),
]


@compiled
@pytest.mark.parametrize("blocks", [0, 53], ids=["auto-blocks", "blocks-of-53"])
@pytest.mark.parametrize("index", range(len(CONFUSION_CASES)))
def test_confusion_matches_reference(index, blocks):
    spatial, channels, dtype, pred_dtype, label_dtype, ignore_index = CONFUSION_CASES[index]
    num_classes = max(channels, 2)
    logits, labels = make_case(100 + index, spatial, channels, samples=1 + index % 3, dtype=dtype or torch.float32,
                               label_dtype=label_dtype, ignore_index=ignore_index)
    if dtype is None:
        gen = torch.Generator().manual_seed(index)
        x = torch.randint(0, num_classes, labels.shape, generator=gen).to(pred_dtype)
    else:
        x = logits.round()  # many ties: the first maximum wins
        x.view(-1)[::17] = float("nan")  # NaN counts as the maximum, as in torch.max
    with block_pixels(blocks):
        counts = kernels.confusion(x, labels, num_classes, ignore_index=ignore_index)
    expected = reference.confusion(x, labels, num_classes, ignore_index=ignore_index)
    for ours, ref in zip(counts, expected):
        assert ours.dtype == torch.int64 and ours.shape == (labels.shape[0], num_classes)
        assert torch.equal(ours, ref)


@compiled
def test_losses_and_metrics_use_the_compiled_kernels(monkeypatch):
    from siteflow.losses.dice import SoftDiceLoss
    from siteflow.metrics import PooledDice, SampleDice

    def boom(*args, **kwargs):
        raise AssertionError("the reference was called")

    monkeypatch.setattr(reference, "dice_loss", boom)
    monkeypatch.setattr(reference, "confusion", boom)
    assert kernels.backend() == "compiled"
    logits, labels = make_case(14, (8, 9), 3, dtype=torch.float32)
    SoftDiceLoss(include_background=False)(logits.requires_grad_(True), labels).backward()
    PooledDice(3).update(logits.detach(), labels)
    SampleDice(3).update(logits.detach().argmax(1), labels)


def test_extension_is_built():
    """The set-up builds siteflow._C; the dispatcher uses it unless SITEFLOW_DISABLE_EXTENSION is set."""
    if DISABLED:
        assert kernels.backend() == "reference"
        pytest.skip("SITEFLOW_DISABLE_EXTENSION is set")
    assert _C is not None, f"siteflow._C is not built: {ops._unavailable}"
    assert kernels.backend() == "compiled"
    assert _C.cpu_isa() in ("avx2", "default")


def test_fallback_warns_once():
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from siteflow import kernels\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    x = torch.randn(2, 3, 4, 5, requires_grad=True); y = torch.randint(0, 3, (2, 4, 5))\n"
        "    kernels.dice_loss(x, y).backward(); kernels.dice_loss(x, y); kernels.confusion(x, y, 3)\n"
        "print(kernels.backend(), len(caught), str(caught[0].message) if caught else '')\n"
    )
    env = {**os.environ, "SITEFLOW_DISABLE_EXTENSION": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    backend, count, message = result.stdout.strip().split(" ", 2)
    assert (backend, count) == ("reference", "1")
    assert "SITEFLOW_DISABLE_EXTENSION" in message and "reference" in message


def test_meta_tensors_fall_back_to_the_reference_path():
    """Devices the extension has no kernels for take the reference (here: its shape checks)."""
    logits = torch.empty(2, 3, 4, 5, device="meta")
    labels = torch.empty(2, 4, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"labels must be on the device of the logits \(meta\), got cpu"):
        kernels.dice_loss(logits, labels)
    with pytest.raises(ValueError, match=r"labels must be on the device of logits_or_pred \(meta\), got cpu"):
        kernels.confusion(logits, labels, 3)


def same_error(fn, *args, **kwargs):
    """The exception of the compiled path, checked to equal the reference's (type and message)."""
    with pytest.raises((TypeError, ValueError)) as ours:
        getattr(kernels, fn)(*args, **kwargs)
    with pytest.raises((TypeError, ValueError)) as ref:
        getattr(reference, fn)(*args, **kwargs)
    assert type(ours.value) is type(ref.value) and str(ours.value) == str(ref.value)
    return str(ours.value)


@compiled
def test_errors_are_the_references():
    logits, labels = make_case(15, (4, 4), 3, dtype=torch.float32)
    assert "logits must be float16" in same_error("dice_loss", logits.long(), labels)
    assert "labels must be int64 or uint8" in same_error("dice_loss", logits, labels.float())
    assert "labels must be int64 or uint8" in same_error("dice_loss", logits, labels.int())
    assert "labels must have shape" in same_error("dice_loss", logits, labels[:, :3])
    assert "logits must have shape" in same_error("dice_loss", logits[:, :, 0], labels[:, 0])
    assert "found 3" in same_error("dice_loss", logits, torch.where(labels == 2, 3, labels))
    assert "found -1" in same_error("dice_loss", logits, torch.full_like(labels, -1))
    assert "found 7" in same_error("dice_loss", logits, torch.full_like(labels, 7).to(torch.uint8), ignore_index=255)
    assert "[0, 2)" in same_error("dice_loss", logits[:, :1], labels)
    assert "3 channels, but num_classes is 4" in same_error("confusion", logits, labels, 4)
    assert "num_classes is 3" in same_error("confusion", logits[:, :1], labels, 3)
    assert "logits_or_pred must lie" in same_error("confusion", logits.argmax(1) + 1, labels, 3)
    assert "logits_or_pred must lie" in same_error("confusion", logits.argmax(1) + 1, labels + 1, 3)  # first error
    assert "logits_or_pred" in same_error("confusion", logits.argmax(1).int(), labels, 3)
    assert "labels must have shape" in same_error("confusion", logits, labels[0], 3)
    assert "labels must lie" in same_error("confusion", logits, labels + 1, 3)
    assert "labels must lie" in same_error("confusion", logits.argmax(1).to(torch.uint8), labels + 1, 3)
    assert "num_classes" in same_error("confusion", logits, labels, 1)


@compiled
def test_direct_calls_are_checked():
    """siteflow._C itself refuses inputs that would read out of bounds."""
    logits, labels = make_case(16, (4, 5), 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="labels must have shape"):
        _C.dice_forward(logits, labels[:, :2], True, False, 1.0, None)
    with pytest.raises(TypeError, match="labels must be int64 or uint8"):
        _C.confusion(logits, labels.int(), 3, None)
    _, coef, _ = _C.dice_forward(logits, labels, True, False, 1.0, None)
    with pytest.raises(RuntimeError, match="coef"):
        _C.dice_backward(logits, labels, coef[:1], torch.ones(()), None)


def test_cuda_sources_include_no_torch_headers():
    for source in (ROOT / "csrc" / "cuda").glob("*"):
        includes = [line for line in source.read_text().splitlines() if line.startswith("#include")]
        assert not any("torch" in line or "ATen" in line or "c10" in line for line in includes), source


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.slow
def test_cuda_kernels_compile_with_plain_nvcc(tmp_path):
    result = subprocess.run(
        ["nvcc", "-c", "-std=c++17", str(ROOT / "csrc" / "cuda" / "kernels.cu"), "-o", str(tmp_path / "kernels.o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.o").stat().st_size > 0


@cuda
def test_cuda_uses_compiled_kernels_when_built_with_cuda():
    if not kernels.cuda_built():
        pytest.skip("siteflow._C was built without CUDA")
    assert ops._fallback_reason(torch.device("cuda")) is None


@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("spatial", "channels", "ignore_index"), [((37, 29), 1, None), ((9, 10, 11), 3, 255), ((64, 65), 10, -1)]
)
def test_cuda_matches_reference(dtype, spatial, channels, ignore_index):
    logits, labels = make_case(17, spatial, channels, dtype=dtype, ignore_index=ignore_index, device="cuda",
                               label_dtype=torch.uint8 if ignore_index == 255 else torch.int64)
    rtol = {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 1e-3)
    for options in ({}, {"include_background": False, "batch_dice": True}):
        loss, grad = loss_and_grad(kernels.dice_loss, logits, labels, ignore_index=ignore_index, **options)
        ref_loss, ref_grad = loss_and_grad(reference.dice_loss, logits, labels, ignore_index=ignore_index, **options)
        torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=rtol)
        half = dtype in (torch.float16, torch.bfloat16)
        assert_close_relative(grad.double(), ref_grad.double(), 2 * rtol if half else rtol)
    num_classes = max(channels, 2)
    for x in (logits, logits.argmax(1) if channels > 1 else (logits[:, 0] > 0).long()):
        counts = kernels.confusion(x, labels, num_classes, ignore_index=ignore_index)
        for ours, ref in zip(counts, reference.confusion(x, labels, num_classes, ignore_index=ignore_index)):
            assert torch.equal(ours, ref)


@cuda
def test_cuda_gradcheck_and_errors():
    logits, labels = make_case(18, (3, 4), 3, device="cuda")
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: kernels.dice_loss(x, labels, include_background=False), (logits,))
    with pytest.raises(ValueError, match="found 5"):
        kernels.dice_loss(logits, torch.full_like(labels, 5))
    with pytest.raises(ValueError, match="labels must be on the device"):
        kernels.dice_loss(logits, labels.cpu())
