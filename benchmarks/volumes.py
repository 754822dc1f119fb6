"""Peak memory and time of a 3D training step (forward, backward, Adam) of the 3D U-Net on
volume patches, on the CPU: the demo3d setting and a realistic patch.

    OMP_NUM_THREADS=2 python benchmarks/volumes.py [--write BENCHMARKS.md]

Each setting runs in a fresh process, whose peak resident memory (``ru_maxrss``) after one
step, minus that before the model is built, is the step's peak memory (weights, Adam state,
activations and their gradients). Loss: Dice + CE, float32.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import machine, write_section  # noqa: E402
from siteflow.core.registry import LOSSES, MODELS  # noqa: E402

SETTINGS = {
    "demo3d": {"patch": (16, 32, 32), "batch": 2, "classes": 3, "base_channels": 8, "depth": 3},
    "realistic": {"patch": (128, 128, 128), "batch": 2, "classes": 2, "base_channels": 32, "depth": 4},
}


def step(setting: dict) -> dict:
    """One measured step of ``setting`` in this process: peak memory in MiB and seconds."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = MODELS.get("unet")(1, setting["classes"], spatial_dims=3, base_channels=setting["base_channels"], depth=setting["depth"])
    loss = LOSSES.get("dice_ce")()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(setting["batch"], 1, *setting["patch"])
    labels = torch.randint(0, setting["classes"], (setting["batch"], *setting["patch"]))
    start = time.perf_counter()
    optimiser.zero_grad()
    loss(model(images), labels).backward()
    optimiser.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    parameters = sum(p.numel() for p in model.parameters())
    return {"peak_mib": peak / 1024, "seconds": seconds, "parameters": parameters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, default=None, help="write the section into this BENCHMARKS.md")
    parser.add_argument("--one", choices=SETTINGS, default=None, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(step(SETTINGS[args.one])))
        return
    rows = []
    for name, setting in SETTINGS.items():
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        patch = "x".join(map(str, setting["patch"]))
        rows.append(
            f"| {name} | {patch} | {setting['batch']} | {setting['classes']} | {setting['base_channels']}, depth {setting['depth']} "
            f"({result['parameters'] / 1e6:.2f}M parameters) | {result['peak_mib']:.0f} MiB | {result['seconds']:.1f} s |"
        )
        print(rows[-1], flush=True)
    text = "\n".join([
        "## 3D training step (`siteflow.datasets.volumes`, 3D U-Net)",
        "",
        f"Machine: {machine()}; CPU only (no GPU was lent to this run). One step (forward, backward, Adam) of "
        "`unet` with `spatial_dims: 3`, Dice + CE, float32, in a fresh process; peak memory = the rise of the "
        "process's peak resident memory over the step (weights, Adam state, activations, gradients). "
        "Run: `OMP_NUM_THREADS=2 python benchmarks/volumes.py --write BENCHMARKS.md`.",
        "",
        "| setting | patch (D x H x W) | batch | classes | base channels | peak memory | step time |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    if args.write is not None:
        write_section(args.write, "volumes", text)


if __name__ == "__main__":
    main()
