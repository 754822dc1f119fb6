"""Fed-MAE against centralised MAE and training from scratch: the README's SSL-FL table.

    OMP_NUM_THREADS=1 python benchmarks/sslfl.py [--seeds 0 1 2] [--fractions 10 100] [--out exps/benchmark_sslfl]

Pre-trains once (seed ``--pretrain-seed``, default 0) with the shipped ``sslfl/pretrain_fedavg``
(Fed-MAE) and ``sslfl/pretrain_joint`` (centralised MAE), then for every fine-tuning seed and
label fraction runs the shipped ``sslfl/finetune_<start>_<fraction>`` configs, with
``common.seed`` set and ``pretrained`` pointed at that pre-training. Prints, per start and
fraction, the mean test AUROC over the sites after the last round (``auroc.final_mean`` of
``summary.json``) as mean +/- standard deviation over the seeds with each seed's value. Runs
go to ``--out/<config>/seed<k>/`` through ``train.py`` and resume there: a second call trains
only what is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
from benchmarks.report import mean_sd  # noqa: E402
from siteflow.config import PACKAGED_CONFIGS  # noqa: E402

STARTS = {"scratch": "scratch (random init)", "fedmae": "Fed-MAE (`pretrain_fedavg`)", "jointmae": "centralised MAE (`pretrain_joint`)"}
PRETRAINED = {"fedmae": ("pretrain_fedavg", "global"), "jointmae": ("pretrain_joint", "joint")}
"""Fine-tuning start -> (pre-training config, the stage folder of its final weights)."""


def config_copy(name: str, seed: int, out: Path, pretrained: Path | None = None) -> Path:
    """The shipped ``sslfl/<name>`` config with ``common.seed`` and ``pretrained`` set, as
    ``out/configs/seed<seed>/<name>.yaml``."""
    raw = yaml.safe_load((PACKAGED_CONFIGS / "sslfl" / f"{name}.yaml").read_text())
    raw["common"]["seed"] = seed
    if pretrained is not None:
        raw["common"]["model"]["kwargs"]["pretrained"] = str(pretrained)
    path = out / "configs" / f"seed{seed}" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train(config: Path, seed: int, out: Path) -> Path:
    """Run (or resume) ``train.py`` on ``config``; its run folder."""
    command = [sys.executable, str(ROOT / "train.py"), "-c", str(config), "-n", f"seed{seed}", "--exps-root", str(out)]
    print("run:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out / config.stem / f"seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--fractions", type=int, nargs="+", choices=[10, 100], default=[10, 100], help="percent of the labels")
    parser.add_argument("--out", type=Path, default=Path("exps/benchmark_sslfl"))
    args = parser.parse_args()
    out = args.out.resolve()

    weights = {}
    for start, (name, stage) in PRETRAINED.items():
        run = train(config_copy(name, args.pretrain_seed, out), args.pretrain_seed, out)
        weights[start] = run / "checkpoints" / stage / "final.safetensors"

    auroc: dict[tuple[str, int], list[float]] = {}
    for fraction in args.fractions:
        for seed in args.seeds:
            for start in STARTS:
                config = config_copy(f"finetune_{start}_{fraction}", seed, out, weights.get(start))
                summary = json.loads((train(config, seed, out) / "results" / "summary.json").read_text())
                auroc.setdefault((start, fraction), []).append(summary["auroc"]["final_mean"])

    print(f"\nmean test AUROC after fine-tuning (seeds {', '.join(map(str, args.seeds))}; pre-training seed {args.pretrain_seed})\n")
    print("| fine-tuned from | " + " | ".join(f"{f}% of the labels" for f in args.fractions) + " |")
    print("|---|" + "---|" * len(args.fractions))
    for start, label in STARTS.items():
        print(f"| {label} | " + " | ".join(mean_sd(auroc[start, f], each=True) for f in args.fractions) + " |")


if __name__ == "__main__":
    main()
