"""Times siteflow's Dice kernels against their references, MONAI and torchmetrics, in one process.

For each shape, on the same random float32 logits and int64 labels:

- soft Dice loss, forward + backward: siteflow.kernels.dice_loss (the compiled op), its
  pure-PyTorch reference, and MONAI's DiceLoss(softmax=True, to_onehot_y=True) (same smoothing);
- confusion counts (per-sample per-class TP/FP/FN, hence Dice): siteflow.kernels.confusion, its
  reference, MONAI's DiceMetric and torchmetrics' segmentation dice_score (each from
  torch.argmax, as they are used), and a plain PyTorch version compiled with torch.compile.

Every time is also given as a ratio to its memory floor: the bytes the operation must move at
the copy bandwidth measured in the same run (copy_ of a 256 MiB buffer, read + write). The loss's
forward + backward must read the logits and labels twice (the backward recomputes the softmax)
and write the gradient once; the confusion counts read the logits and labels once.

    OMP_NUM_THREADS=2 python benchmarks/kernels.py [--threads 2] [--write BENCHMARKS.md]

Check the machine is otherwise idle first (`uptime`): the report states the load average.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import write_section  # noqa: E402

SHAPES = [(128, 3, 64, 64), (16, 3, 256, 256), (2, 4, 96, 96, 96), (8, 2, 512, 512)]
ROOT = Path(__file__).resolve().parent.parent


_FLUSH = torch.empty(0)


def flush_caches() -> None:
    """Writes a buffer twice the size of a large L3 cache, so that every run reads its inputs from memory."""
    global _FLUSH
    if _FLUSH.numel() == 0:
        _FLUSH = torch.empty(32 * 2**20, dtype=torch.float32)  # 128 MiB
    _FLUSH.fill_(1.0)


def timeit(fn, *, min_time: float = 1.0, min_runs: int = 10, max_runs: int = 60) -> float:
    """Best wall time of fn() in seconds over at least min_runs calls (or min_time), after a warm-up.

    Each run starts with cold caches (flush_caches, not timed). The best of several runs, rather
    than the median, keeps the numbers comparable on a machine shared with other work, whose
    interference only ever adds time.
    """
    fn()
    times: list[float] = []
    start = time.perf_counter()
    gc.disable()
    try:
        while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time):
            flush_caches()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and time.perf_counter() - start > 5.0:  # a slow one: 3 runs are enough
                break
    finally:
        gc.enable()
    return min(times)


def copy_bandwidth() -> float:
    """Bytes per second of src -> dst copy_ (read + write) of 256 MiB, best of 10."""
    src = torch.ones(64 * 2**20, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(10):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / best


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--shapes", default=None, help="e.g. '128,3,64,64;8,2,512,512' (default: the four shapes)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd version")
    parser.add_argument("--write", type=Path, default=None, help="write the report (Markdown) to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from monai.losses import DiceLoss
    from monai.metrics import DiceMetric
    from torchmetrics.functional.segmentation import dice_score

    from siteflow import kernels
    from siteflow.kernels import reference

    if kernels.backend() != "compiled":
        sys.exit("siteflow._C is not built: pip install --no-build-isolation --no-deps -e .")
    from siteflow import _C

    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]

    load_before = os.getloadavg()
    bandwidth = copy_bandwidth()  # measured again at the end; the best of both is the floor's
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s, {args.threads} threads, load {load_before[0]:.2f}", flush=True)

    def plain_confusion(x: torch.Tensor, y: torch.Tensor, num_classes: int):
        pred = torch.max(x, 1).indices
        classes = torch.arange(num_classes, device=x.device).view(1, num_classes, *([1] * (pred.dim() - 1)))
        p = pred.unsqueeze(1) == classes
        t = y.unsqueeze(1) == classes
        dims = tuple(range(2, p.dim()))
        tp = (p & t).sum(dims)
        return tp, p.sum(dims) - tp, t.sum(dims) - tp

    compiled_confusion = None if args.no_compile else torch.compile(plain_confusion, dynamic=False)

    loss_rows, conf_rows, checks = [], [], []
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen)
        y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
        y8 = y.to(torch.uint8)
        C = shape[1]
        name = "[" + ",".join(str(s) for s in shape) + "]"
        print(name, flush=True)

        # --- loss, forward + backward
        def fwd_bwd(loss_fn, labels=y):
            def run():
                xg = x.detach().requires_grad_(True)
                loss_fn(xg, labels).backward()
                return xg.grad

            return run

        monai_loss = DiceLoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0)  # siteflow's smooth=1
        y_monai = y.unsqueeze(1)
        ours = fwd_bwd(kernels.dice_loss)
        ours8 = fwd_bwd(kernels.dice_loss, y8)
        ref = fwd_bwd(reference.dice_loss)
        monai = fwd_bwd(lambda a, b: monai_loss(a, y_monai))
        g_ours, g_ref, g_monai = ours(), ref(), monai()
        scale = g_ref.abs().max().item()
        to_ref, to_monai = ((g_ours - g).abs().max().item() / scale for g in (g_ref, g_monai))
        checks.append(
            f"{name} loss gradient, max |ours - reference| / max |reference| = {to_ref:.1e}, vs MONAI {to_monai:.1e}"
        )
        del g_ours, g_ref, g_monai
        floor = (2 * (nbytes(x) + nbytes(y)) + nbytes(x)) / bandwidth
        floor8 = (2 * (nbytes(x) + nbytes(y8)) + nbytes(x)) / bandwidth
        t = {
            "ours": timeit(ours),
            "ours, uint8 labels": timeit(ours8),
            "reference": timeit(ref),
            "MONAI DiceLoss": timeit(monai),
        }
        loss_rows.append((name, floor, floor8, t))
        print("  loss", {k: f"{v * 1e3:.2f} ms" for k, v in t.items()}, f"floor {floor * 1e3:.2f} ms", flush=True)

        # --- confusion counts
        monai_metric = DiceMetric(include_background=True, reduction="none", num_classes=C, ignore_empty=False)
        tp, fp, fn = kernels.confusion(x, y, C)
        ref_counts = reference.confusion(x, y, C)
        dice_ours = (2 * tp / (2 * tp + fp + fn).clamp_min(1)).double()
        dice_tm = dice_score(torch.argmax(x, 1), y, C, average="none", input_format="index").double()
        dice_monai = monai_metric(torch.argmax(x, 1, keepdim=True), y.unsqueeze(1)).double()
        same = all(torch.equal(a, b) for a, b in zip((tp, fp, fn), ref_counts))
        to_tm, to_monai = ((dice_ours - d).abs().max().item() for d in (dice_tm, dice_monai))
        checks.append(
            f"{name} confusion counts equal the reference: {same}; "
            f"Dice max |ours - torchmetrics| {to_tm:.1e}, |ours - MONAI| {to_monai:.1e}"
        )
        floor_c = (nbytes(x) + nbytes(y)) / bandwidth
        floor_c8 = (nbytes(x) + nbytes(y8)) / bandwidth
        tc = {
            "ours": timeit(lambda: kernels.confusion(x, y, C)),
            "ours, uint8 labels": timeit(lambda: kernels.confusion(x, y8, C)),
            "reference": timeit(lambda: reference.confusion(x, y, C)),
            "MONAI DiceMetric": timeit(lambda: monai_metric(torch.argmax(x, 1, keepdim=True), y.unsqueeze(1))),
            "torchmetrics dice_score": timeit(
                lambda: dice_score(torch.argmax(x, 1), y, C, average="none", input_format="index")
            ),
        }
        if compiled_confusion is not None:
            counts = compiled_confusion(x, y, C)
            equal = all(torch.equal(a, b) for a, b in zip(counts, (tp, fp, fn)))
            checks.append(f"{name} torch.compile'd counts equal ours: {equal}")
            tc["torch.compile"] = timeit(lambda: compiled_confusion(x, y, C))
        conf_rows.append((name, floor_c, floor_c8, tc))
        print("  confusion", {k: f"{v * 1e3:.2f} ms" for k, v in tc.items()}, f"floor {floor_c * 1e3:.2f} ms")

    load_after = os.getloadavg()
    bandwidth_end = copy_bandwidth()
    print(f"copy bandwidth at the end {bandwidth_end / 1e9:.1f} GB/s", flush=True)
    if bandwidth_end > bandwidth:  # the ratios were computed with the first measurement: rescale
        for rows in (loss_rows, conf_rows):
            for i, (name, floor, floor8, times) in enumerate(rows):
                rows[i] = (name, floor * bandwidth / bandwidth_end, floor8 * bandwidth / bandwidth_end, times)
        bandwidth = bandwidth_end
    report = render(
        loss_rows, conf_rows, checks, bandwidth, args.threads, load_before, load_after, _C.cpu_isa(), machine()
    )
    print(report)
    if args.write:
        write_section(args.write, "kernels", report)
        print(f"wrote {args.write}")


def render(loss_rows, conf_rows, checks, bandwidth, threads, load_before, load_after, isa, machine_name) -> str:
    def table(rows, title):
        names = list(rows[0][3])
        lines = [
            f"| {title} | floor | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for shape, floor, floor8, times in rows:
            cells = []
            for key, seconds in times.items():
                f = floor8 if "uint8" in key else floor
                cells.append(f"{seconds * 1e3:.2f} ms ({seconds / f:.1f}x)")
            lines.append(f"| {shape} | {floor * 1e3:.2f} ms | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    import monai
    import torchmetrics

    monai_version, torchmetrics_version = monai.__version__, torchmetrics.__version__
    return f"""## Dice kernels (`siteflow._C`)

`python benchmarks/kernels.py --write BENCHMARKS.md` ({threads} threads). Each cell: best wall
time of at least 10 runs (3 for the slowest), each with cold caches, and in parentheses its
ratio to the memory floor. float32 logits, int64 labels (and uint8 labels where marked: their
floor counts one byte per label).

- Machine: {machine_name}; torch {torch.__version__}, MONAI {monai_version}, torchmetrics
  {torchmetrics_version}; siteflow._C CPU kernels `{isa}`.
- Memory floor: bytes moved / copy bandwidth, measured in the same run: {bandwidth / 1e9:.1f} GB/s
  (`copy_` of 256 MiB, read + write; the best of 10 copies at the start and 10 at the end).
  Loss forward + backward: logits and labels read twice (the backward recomputes the softmax),
  the gradient written once. Confusion counts: logits and labels read once. A pure read streams
  faster than a copy, so a read-only operation can come in slightly under its floor (ratio
  below 1).
- Load average (1 min) at the start {load_before[0]:.2f}, at the end {load_after[0]:.2f}.

### Soft Dice loss, forward + backward

{table(loss_rows, "shape")}

### Confusion counts (per-sample per-class TP, FP, FN)

MONAI DiceMetric and torchmetrics' `dice_score` are given `torch.argmax(logits, 1)`, as they
are used; torch.compile compiles a plain PyTorch version (`torch.max`, class comparisons,
sums).

{table(conf_rows, "shape")}

### Checks on the same tensors

""" + "\n".join(f"- {c}" for c in checks) + "\n"


if __name__ == "__main__":
    main()
