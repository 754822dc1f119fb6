"""Why FedBN leaves a site unsegmented: its normalisation statistics, measured three ways.

    OMP_NUM_THREADS=1 python benchmarks/fedbn_statistics.py exps/benchmark_fedbn/fedbn_running_seed0 [--sites CHASE_DB1 DRIVE]

For a finished run of ``benchmarks/fedbn.py`` (FedBN: each site's final model is the shared
weights with its own normalisation layers over them), each site's test Dice with the batch
normalisation statistics

* ``running``: as the run kept them (the running averages of the site's last round, gathered
  on its training patches with the weights it trained, before the server averaged them);
* ``patches``: re-estimated with the final weights on the site's training patches (drawn as in
  training: augmented, a third centred on vessels);
* ``windows``: re-estimated with the final weights on sliding windows over the site's whole
  training images, the windows a test sees (black surround included);

and, layer by layer, how far the kept running averages are from each re-estimate (mean over
channels of |mean difference| / re-estimated standard deviation, and of |log variance ratio|).
``running`` low and ``patches`` high: the statistics are stale after averaging; ``patches``
low and ``windows`` high: training patches do not describe whole images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.report import machine  # noqa: E402
from siteflow.config import load_config  # noqa: E402
from siteflow.core.atomic import load_weights  # noqa: E402
from siteflow.core.registry import DATASETS  # noqa: E402
from siteflow.datasets.pooling import build_dataset  # noqa: E402
from siteflow.engine.runner import ExperimentRun  # noqa: E402
from siteflow.models.norm_statistics import batch_norm_layers, reestimate_batch_norm  # noqa: E402
from siteflow.strategies.federated.store import SiteStore  # noqa: E402
from siteflow.tasks.segmentation.inference import Inference  # noqa: E402


def feed_patches(site, batch_size: int, seed: int):
    """A feed of the site's training patches, drawn as training draws them (one epoch)."""
    dataset = build_dataset(site, "train")

    def feed(network: torch.nn.Module) -> None:
        for start in range(0, len(dataset) - batch_size + 1, batch_size):
            network(torch.stack([dataset[(i, seed * 100_003 + i)]["image"] for i in range(start, start + batch_size)]))

    return feed


def feed_windows(site, inference: Inference):
    """A feed of the sliding windows over the site's whole training images."""
    kwargs = {**site.dataset.kwargs, "patch_size": None, "augmentation": "none", "num_replica": 1}
    dataset = DATASETS.get(site.dataset.name)("train", **kwargs)

    def feed(network: torch.nn.Module) -> None:
        for index in range(dataset.num_samples):
            inference(network, dataset[index]["image"][None])

    return feed


def distance(kept: dict, measured: dict, names: list[str]) -> list[tuple[float, float]]:
    """Per layer: mean |mean difference| / measured sd, mean |log variance ratio|."""
    rows = []
    for name in names:
        mean_k, var_k = kept[f"{name}.running_mean"], kept[f"{name}.running_var"]
        mean_m, var_m = measured[f"{name}.running_mean"], measured[f"{name}.running_var"]
        shift = ((mean_k - mean_m).abs() / (var_m + 1e-5).sqrt()).mean().item()
        ratio = (var_k + 1e-5).log().sub((var_m + 1e-5).log()).abs().mean().item()
        rows.append((shift, ratio))
    return rows


def site_model(run: Path, site: str) -> tuple[dict, str]:
    """The site's model, the global weights with the layers it kept: the run's final one, or
    (while it runs) that of its last finished round. Returns it and the round it is of."""
    finals = list(run.rglob(f"final_{site}.safetensors"))
    if finals:
        return load_weights(finals[0]), "the last round"
    saved = load_weights(run / "checkpoints" / "global" / "round_state.safetensors")
    store = SiteStore(run / "sites" / site)
    last = store.rounds("local")[-1]
    global_weights = {k[len("global/"):]: v for k, v in saved.items() if k.startswith("global/")}
    return {**global_weights, **store.load("local", before=last + 1)}, f"round{last}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a benchmark run's folder (config.yaml and run/)")
    parser.add_argument("--sites", nargs="+", default=["CHASE_DB1", "DRIVE"])
    args = parser.parse_args()
    config = load_config(args.run / "config.yaml")
    runner = ExperimentRun(config, args.run / "run")
    task, strategy = runner.task, runner.strategy
    solver = strategy.solver_from(task)
    inference = Inference(config.site_runs[0].train.inference)
    sites = {site.task_name: site for site in config.sites}
    report = {"machine": machine(), "run": str(args.run), "sites": {}}
    for name in args.sites:
        kept, after = site_model(args.run / "run", name)
        network = strategy.build_network(task)
        layers = [n for n, m in network.named_modules() if m in batch_norm_layers(network)]
        found = {"running": runner.evaluate(kept, solver, sites=[name])[name]["dice"]}
        measured = {}
        for mode, feed in (("patches", feed_patches(sites[name], 8, config.seed)), ("windows", feed_windows(sites[name], inference))):
            network.load_state_dict(kept)
            reestimate_batch_norm(network, feed)
            measured[mode] = {k: v.detach().clone() for k, v in network.state_dict().items()}
            found[mode] = runner.evaluate(measured[mode], solver, sites=[name])[name]["dice"]
        gaps = {mode: distance(kept, measured[mode], layers) for mode in measured}
        report["sites"][name] = {"after": after, "dice": found, "layers": layers, "kept_vs": gaps}
        print(f"{name} after {after}: test Dice with running {found['running']:.3f}, re-estimated on patches {found['patches']:.3f}, "
              f"on whole-image windows {found['windows']:.3f}", flush=True)
        for mode, rows in gaps.items():
            shifts, ratios = np.array(rows).T
            print(f"  kept vs {mode}: mean shift / sd {shifts.mean():.2f} (first layer {shifts[0]:.2f}, max {shifts.max():.2f}), "
                  f"|log var ratio| {ratios.mean():.2f} (max {ratios.max():.2f})", flush=True)
    (args.run / "statistics.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
