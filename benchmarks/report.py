"""Shared pieces of the benchmarks: the copy-bandwidth floor, numbers over seeds and BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

from siteflow.core.atomic import write_text


def copy_bandwidth(megabytes: int = 256, repeats: int = 10) -> float:
    """Streaming bandwidth in bytes/s: the best ``dst.copy_(src)`` of ``megabytes`` (read + write)."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best


def best_time(function, repeats: int = 5) -> float:
    """The best wall time of ``repeats`` calls (after one warm-up call)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    """A one-line description of this machine."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, {torch.get_num_threads()} torch threads"


def mean_sd(values: list[float | None], *, each: bool = False, plus_minus: str = "+/-") -> str:
    """``0.829 +/- 0.017`` over the values that are not None (no spread for one, ``-`` for
    none); with ``each``, every value follows in parentheses: ``(0.826, 0.848, 0.814)``."""
    values = [value for value in values if value is not None]
    if not values:
        return "-"
    text = f"{statistics.mean(values):.3f}" + (f" {plus_minus} {statistics.stdev(values):.3f}" if len(values) > 1 else "")
    return text + (f" ({', '.join(f'{value:.3f}' for value in values)})" if each else "")


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section ``name`` of the report at ``path``, atomically.

    Sections are delimited by ``<!-- name:start -->`` and ``<!-- name:end -->`` so that every
    benchmark rewrites only its own part.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + "\n\n" + block + "\n"
    write_text(path, updated)
