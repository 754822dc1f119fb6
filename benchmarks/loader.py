"""Training-data loader speed: augmentation libraries, siteflow's loader with and without its
decode cache and augmentation, and a training step of the shipped vessel U-Net beside them.

    OMP_NUM_THREADS=2 python benchmarks/loader.py [--write BENCHMARKS.md]

Data: synthetic vessel sites written by :func:`siteflow.datasets.generate_vessel_sites` at the
real releases' sizes (DRIVE 565x584 TIFF with GIF masks, CHASE_DB1 999x960 JPEG with PNG
masks), 8 training images per site.

1. Libraries: the same pipeline on image + label pairs, every step forced to fire (horizontal
   flip, rotation and scaling, elastic deformation, brightness and contrast, gamma, Gaussian
   noise, Gaussian blur): albumentations (what siteflow uses, per pair, in loader workers),
   MONAI dictionary transforms (per pair, channel-first tensors) and kornia (on batches of 8,
   on the CPU here, as it would run on the device).
2. siteflow's training loader (:func:`siteflow.datasets.pooling.loader`), items per second in
   the steady state (after a first epoch, which fills the cache), without workers and with 2.
3. A training step (forward, backward, Adam) of the shipped vessel U-Net (``unet``,
   base_channels 32, depth 4, Dice + CE) on batches of 4.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import machine, write_section  # noqa: E402
from siteflow.datasets import ChaseDataset, DriveDataset, generate_vessel_sites  # noqa: E402
from siteflow.datasets.augmentation import Augmentation  # noqa: E402  (imports albumentations quietly)
from siteflow.datasets.pooling import loader  # noqa: E402
from siteflow.losses.dice_ce import DiceCELoss  # noqa: E402
from siteflow.models import UNet  # noqa: E402

import cv2  # noqa: E402

FORCED = [  # the library comparison's pipeline, in siteflow's step format
    {"name": "horizontal_flip", "kwargs": {"p": 1.0}},
    {"name": "affine", "kwargs": {"rotate": [-180, 180], "scale": [0.7, 1.4], "p": 1.0}},
    {"name": "elastic", "kwargs": {"alpha": 80, "sigma": 8, "approximate": True, "p": 1.0}},
    {"name": "brightness_contrast", "kwargs": {"brightness_limit": 0.25, "contrast_limit": 0.25, "p": 1.0}},
    {"name": "gamma", "kwargs": {"gamma_limit": [70, 150], "p": 1.0}},
    {"name": "gaussian_noise", "kwargs": {"std_range": [0.0, 0.05], "p": 1.0}},
    {"name": "gaussian_blur", "kwargs": {"blur_limit": 0, "sigma_limit": [0.5, 1.0], "p": 1.0}},
]
SPATIAL = FORCED[:2]


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the child processes it has reaped
    (loader workers, which a training loader starts anew every epoch)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def rate(run: Callable[[], int], seconds: float = 3.0) -> tuple[float, float]:
    """(items per CPU-second, items per wall-second) of ``run`` (which returns how many items
    it did), over about ``seconds`` after one warm-up call. The CPU figure is what a core
    delivers, whatever else the machine runs; the wall figure depends on the machine's load."""
    run()
    done, wall, cpu = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - wall < seconds:
        done += run()
    return done / (cpu_seconds() - cpu), done / (time.perf_counter() - wall)


def pairs(height: int, width: int, count: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (rng.random((height, width)) < 0.1).astype(np.int64))
        for _ in range(count)
    ]


def albumentations_rate(steps: list[dict], data: list[tuple[np.ndarray, np.ndarray]]) -> float:
    augmentation = Augmentation(steps, in_channels=3, num_classes=2, ignore_index=None)
    rng = np.random.default_rng(0)

    def run() -> int:
        for image, label in data:
            augmentation(image, label, rng)
        return len(data)

    return rate(run)[0]


def monai_rate(steps: list[dict], data: list[tuple[np.ndarray, np.ndarray]]) -> float:
    import monai.transforms as M

    keys, modes = ["image", "label"], ("bilinear", "nearest")
    table = [
        M.RandFlipd(keys, prob=1.0, spatial_axis=1),
        M.RandAffined(keys, prob=1.0, rotate_range=math.pi, scale_range=0.35, mode=modes, padding_mode="zeros"),
        M.Rand2DElasticd(keys, spacing=(16, 16), magnitude_range=(1, 2), prob=1.0, mode=modes, padding_mode="zeros"),
        M.RandScaleIntensityd("image", factors=0.25, prob=1.0),
        M.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=1.0),
        M.RandGaussianNoised("image", std=0.05, prob=1.0),
        M.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), prob=1.0),
    ]
    pipeline = M.Compose(table[: len(steps)])
    pipeline.set_random_state(0)
    tensors = [
        {"image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255), "label": torch.from_numpy(label[None].astype(np.float32))}
        for image, label in data
    ]

    def run() -> int:
        for item in tensors:
            pipeline(dict(item))
        return len(tensors)

    return rate(run)[0]


def kornia_rate(steps: list[dict], data: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """NaN when kornia is not installed (it is not a dependency of siteflow)."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return math.nan

    table = [
        K.RandomHorizontalFlip(p=1.0),
        K.RandomAffine(degrees=180.0, scale=(0.7, 1.4), p=1.0),
        K.RandomElasticTransform(kernel_size=(33, 33), sigma=(8.0, 8.0), alpha=(1.0, 1.0), p=1.0),
        K.ColorJiggle(brightness=0.25, contrast=0.25, p=1.0),
        K.RandomGamma(gamma=(0.7, 1.5), p=1.0),
        K.RandomGaussianNoise(std=0.05, p=1.0),
        K.RandomGaussianBlur((5, 5), (0.5, 1.0), p=1.0),
    ]
    pipeline = K.AugmentationSequential(*table[: len(steps)], data_keys=["input", "mask"])
    images = torch.from_numpy(np.stack([image for image, _ in data]).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    labels = torch.from_numpy(np.stack([label for _, label in data])[:, None].astype(np.float32))

    def run() -> int:
        pipeline(images, labels)
        return len(images)

    return rate(run)[0]


def loader_rate(data, workers: int) -> tuple[float, float]:
    """(items per CPU-second, per wall-second) of epochs of the training loader over ``data``,
    after a warm-up epoch (which fills the cache)."""

    def run() -> int:
        count = 0
        for batch in loader(data, batch_size=4, num_workers=workers, shuffle=True, seed=0):
            count += len(batch["id"])
        return count

    return rate(run, seconds=4.0)


def training_rate(size: int, batch: int = 4) -> tuple[float, float]:
    """(images per CPU-second, per wall-second) of training steps of the shipped vessel U-Net
    on (3, size, size)."""
    torch.manual_seed(0)
    model = UNet(3, 2, base_channels=32, depth=4)
    loss = DiceCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, size, size)
    labels = (torch.rand(batch, size, size) < 0.1).long()

    def run() -> int:
        optimizer.zero_grad()
        loss(model(images), labels).backward()
        optimizer.step()
        return batch

    return rate(run, seconds=12.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, default=None, help="update this report's loader section")
    args = parser.parse_args()
    report = args.write.resolve() if args.write else None
    cv2.setNumThreads(1)  # one core per pair, as in a loader worker
    warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid behavior")  # kornia's
    load = os.getloadavg()[0]
    lines = [
        f"Machine: {machine()}; OpenCV on 1 thread per process; load average {load:.1f} when the run started. "
        "Rates are per CPU-second (what one core delivers, whatever else the machine runs: the CPU time of the "
        "process, its threads and its loader workers); a *wall* rate depends on the machine's load. "
        "Run: `OMP_NUM_THREADS=2 python benchmarks/loader.py --write BENCHMARKS.md`.",
        "",
        "**Augmentation libraries**, image + label pairs per CPU-second, every step forced (p = 1). "
        "*spatial*: flip, rotation and scaling; *full*: also elastic deformation, brightness and contrast, gamma, "
        "Gaussian noise and blur. albumentations and MONAI per pair (as in a loader worker); kornia on a batch of 8, "
        "on the CPU.",
        "",
        "| pipeline | size | albumentations 2.0.8 | MONAI dict transforms | kornia (batch of 8) |",
        "|---|---|---|---|---|",
    ]
    libraries: dict[tuple[str, int], list[float]] = {}
    for height, width in ((584, 565), (128, 128)):
        data = pairs(height, width)
        for name, steps in (("spatial", SPATIAL), ("full", FORCED)):
            cells = libraries[name, width] = [f(steps, data) for f in (albumentations_rate, monai_rate, kornia_rate)]
            lines.append(f"| {name} | {width}x{height} | " + " | ".join(f"{c:.0f}/s" if c == c else "not installed" for c in cells) + " |")
            print(lines[-1], flush=True)
    albumentations, monai, kornia = libraries["full", 565]
    lines += [
        "",
        f"siteflow augments with **albumentations**: on the full pipeline at 565x584 it does {albumentations / monai:.0f}x "
        f"the pairs of MONAI's dictionary transforms and {albumentations / kornia:.0f}x those of kornia per CPU-second "
        "(OpenCV resamples the 8-bit image and the label codes through one map, where MONAI and kornia resample float "
        "tensors through `grid_sample`). It runs in the loader's workers, one item at a time from the item's own seed, so "
        "the batches do not depend on the number of workers; labels go through it as 8-bit class codes resampled by "
        "nearest neighbour, which cannot create a class. kornia's advantage, whole batches on the GPU, does not exist on "
        "this CPU-only machine; imgaug does not work with NumPy 2, and torchvision cannot be installed here.",
    ]

    home = Path.cwd()
    setups = {
        "none": ("whole native image, decoded every epoch (no cache: siteflow before the cache)", dict(cache="none")),
        "memory": ("whole native image, memory cache", dict(cache="memory")),
        "patch": ("patch 128, memory cache, no augmentation", dict(patch_size=[128, 128])),
        "augmented": ("patch 128, memory cache, `default` augmentation", dict(patch_size=[128, 128], augmentation="default")),
        "disk": ("patch 128, disk cache, `default` augmentation", dict(patch_size=[128, 128], augmentation="default", cache="disk")),
        "uncached": ("patch 128, no cache, `default` augmentation", dict(patch_size=[128, 128], augmentation="default", cache="none")),
        "patch256": ("patch 256, memory cache, `default` augmentation", dict(patch_size=[256, 256], augmentation="default")),
        "resized": ("whole image resized to 512, memory cache, `default` augmentation", dict(img_size=[512, 512], augmentation="default")),
    }
    loaders: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the disk cache's default folder lies under the working directory
        root = generate_vessel_sites(Path(scratch) / "vessels", train_per_site=8, test_per_site=1, native_size=(565, 999))
        sites = {
            "DRIVE 565x584": (DriveDataset, {"root_path": str(root / "DRIVE"), "fov_ignore_index": 255}),
            "CHASE_DB1 999x960": (ChaseDataset, {"root_path": str(root / "CHASE_DB1"), "num_test": 1}),
        }
        lines += [
            "",
            "**siteflow's training loader** (`siteflow.datasets.pooling.loader`), training items per CPU-second in the "
            "steady state (after a first epoch, which fills the cache), batches of 4, 8 training images per site "
            "repeated 4 times per epoch; without workers, and with 2 workers (CPU of the workers and the main process "
            "together; the wall rate beside it).",
            "",
            "| training items | " + " | ".join(f"{site}, {w}" for site in sites for w in ("0 workers", "2 workers")) + " |",
            "|---|" + "---|" * (2 * len(sites)),
        ]
        for key, (name, extra) in setups.items():
            cells = []
            for cls, kwargs in sites.values():
                data = cls("train", val_fraction=0.0, num_replica=4, **kwargs, **extra)
                alone, workers = loader_rate(data, 0), loader_rate(data, 2)
                loaders.setdefault(key, []).append(alone[0])
                cells += [f"{alone[0]:.0f}/s", f"{workers[0]:.0f}/s (wall {workers[1]:.0f}/s)"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        os.chdir(home)

    lines += [
        "",
        "**A training step** (forward, backward, Adam) of the shipped vessel U-Net (`unet`, base_channels 32, depth 4, "
        f"Dice + CE), batches of 4 patches, float32 on this CPU ({torch.get_num_threads()} torch threads):",
        "",
        "| patch | images per CPU-second | wall |",
        "|---|---|---|",
    ]
    training: dict[int, float] = {}
    for size in (128, 256):
        cpu, wall = training_rate(size)
        training[size] = cpu
        lines.append(f"| {size}x{size} | {cpu:.1f}/s | {wall:.1f}/s |")
        print(lines[-1], flush=True)
    drive, chase = zip(loaders["none"], loaders["memory"], loaders["uncached"], loaders["augmented"])
    lines += [
        "",
        f"The loader does not limit training: one core prepares {min(loaders['augmented']):.0f} augmented 128x128 "
        f"patches per second (memory cache, `default` augmentation), {min(loaders['augmented']) / training[128]:.0f}x what "
        f"a core consumes in training steps ({training[128]:.1f}/s). The decode cache gives {drive[1] / drive[0]:.1f}x "
        f"(DRIVE, TIFF) and {chase[1] / chase[0]:.1f}x (CHASE_DB1, JPEG) the whole images per CPU-second, and "
        f"{drive[3] / drive[2]:.1f}x and {chase[3] / chase[2]:.1f}x the augmented patches: an epoch no longer decodes an "
        f"image file. Load average {os.getloadavg()[0]:.1f} when the run ended.",
    ]
    if report:
        write_section(report, "loader", "## Training-data loader (`siteflow.datasets`)\n\n" + "\n".join(lines))
        print(f"wrote {report}")


if __name__ == "__main__":
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(2)
    main()
