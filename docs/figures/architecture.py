"""Draws the architecture page's pictures into docs/assets/: the layers and the federated round.

Run from the repository's root: ``python docs/figures/architecture.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "assets"

LAYERS = [
    ("entry points", ["cli", "deploy/flower"], "#dbe4ff"),
    ("engine", ["run folder", "site step", "ExperimentRun\n(the StudyContext)", "results, prediction"], "#e3f2e1"),
    ("strategies", ["local, joint, sequential", "relay", "continual", "federated round API"], "#fff1d6"),
    ("tasks", ["segmentation", "classification", "multi-label", "pre-training"], "#fde2e4"),
    ("components", ["datasets", "models", "losses", "metrics", "kernels"], "#eee5fb"),
    ("config, handover", ["YAML -> validated config", "the hand-over file"], "#e6f4f8"),
    ("core", ["registries", "atomic files", "types", "console"], "#f1f1f1"),
]


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: int = 10) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#555", lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def layers() -> None:
    fig, ax = plt.subplots(figsize=(10, 6.2))
    for row, (name, parts, color) in enumerate(LAYERS):
        y = len(LAYERS) - 1 - row
        ax.text(0.1, y + 0.4, name, ha="left", va="center", fontsize=11, weight="bold")
        width = 7.4 / len(parts)
        for i, part in enumerate(parts):
            _box(ax, 2.3 + i * width, y + 0.1, width - 0.15, 0.6, part, color, 9)
    ax.add_patch(FancyArrowPatch((9.95, len(LAYERS) - 0.3), (9.95, 0.4), arrowstyle="-|>", mutation_scale=18, lw=1.5, color="#333"))
    ax.text(10.05, len(LAYERS) / 2, "imports run\nthis way only", rotation=90, va="center", ha="left", fontsize=9)
    ax.set_xlim(0, 10.6)
    ax.set_ylim(0, len(LAYERS))
    ax.axis("off")
    ax.set_title("siteflow's layers: a layer imports only the layers below it", fontsize=12)
    fig.tight_layout()
    fig.savefig(ASSETS / "layers.png", dpi=110)
    plt.close(fig)


def round_api() -> None:
    fig, ax = plt.subplots(figsize=(10, 4.6))
    _box(ax, 0.2, 2.2, 2.6, 1.5, "server\n\nconfigure(round, global)\naggregate(round, global, updates)", "#dbe4ff", 9)
    for i in range(3):
        _box(ax, 6.4, 3.3 - i * 1.35, 3.3, 1.0, f"site {i + 1}\nsite_step(site, received, round)\n-> SiteUpdate(weights, samples)", "#e3f2e1", 8.5)
        y = 3.8 - i * 1.35
        ax.add_patch(FancyArrowPatch((2.85, 3.2), (6.35, y + 0.15), arrowstyle="-|>", mutation_scale=12, color="#3b5bdb"))
        ax.add_patch(FancyArrowPatch((6.35, y - 0.2), (2.85, 2.7), arrowstyle="-|>", mutation_scale=12, color="#2b8a3e"))
    ax.text(4.6, 4.45, "what every site receives", ha="center", fontsize=9, color="#3b5bdb")
    ax.text(4.6, 0.35, "updates, then the new global weights", ha="center", fontsize=9, color="#2b8a3e")
    ax.text(5.0, -0.25, "The same steps (and an optional site_finish) run in-process (simulation.py) and on Flower (deploy/flower): only the transport differs.",
            ha="center", fontsize=9, style="italic")
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.5, 4.8)
    ax.axis("off")
    ax.set_title("One federated round: configure, site_step at every site, aggregate", fontsize=12)
    fig.tight_layout()
    fig.savefig(ASSETS / "round-api.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    layers()
    round_api()
