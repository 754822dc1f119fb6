"""FedAvg, FedProx and FedBN simulated: aggregation by hand, rounds, resume, failing sites."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments import kill_once_written, tiny_config
from siteflow.strategies.federated.aggregation import aggregation_coefficients, weighted_average
from siteflow.core.atomic import load_weights
from siteflow.config import load_config
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, FedAvgStrategy, FederatedSite, FedProxStrategy, ProximalTerm, SiteStore

REPO = Path(__file__).resolve().parent.parent


def test_weighted_average_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3), "d": torch.tensor([1.0], dtype=torch.float64)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7), "d": torch.tensor([2.0], dtype=torch.float64)}
    out = weighted_average([a, b], [0.25, 0.75])
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].item() == 7  # integers cannot be averaged: the heaviest site's
    assert out["d"].dtype == torch.float64 and out["d"].item() == 1.75
    assert set(weighted_average([a, b], [0.5, 0.5], keys=["w"])) == {"w"}
    with pytest.raises(ValueError, match=r"w: state 1 has shape \(3,\), state 0 \(2,\)"):
        weighted_average([a, {**b, "w": torch.zeros(3)}], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"state 1 lacks \['d'\]"):
        weighted_average([a, {"w": b["w"], "n": b["n"]}], [0.5, 0.5])


def test_aggregation_coefficients_by_samples_or_equal():
    assert aggregation_coefficients([10, 30], "samples") == [0.25, 0.75]
    assert aggregation_coefficients([10, 30, 60], "equal") == [1 / 3] * 3
    with pytest.raises(ValueError, match="not all zero"):
        aggregation_coefficients([0, 0], "samples")


def test_proximal_term_by_hand():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
        model.bias.fill_(2.0)
    anchor = {"weight": torch.tensor([[0.0, 1.0]]), "bias": torch.tensor([0.0])}
    learner = nn.Module()
    learner.model = model
    value = ProximalTerm(anchor, mu=0.5)(learner)
    assert value.item() == pytest.approx(0.25 * (1 + 4 + 4))
    value.backward()
    assert torch.allclose(model.weight.grad, 0.5 * torch.tensor([[1.0, 2.0]]))


class Recording(FedAvgStrategy):
    """The real FedAvg, remembering every site's update and every aggregate."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.updates, self.aggregates = [], []

    def local_update(self, site, start, round_number, extra_losses=()):
        update = super().local_update(site, start, round_number, extra_losses)
        self.updates.append((round_number, update))
        return update

    def aggregate(self, round_number, global_weights, updates):
        result = super().aggregate(round_number, global_weights, updates)
        self.aggregates.append(result)
        return result


def federated_run(folder: Path, **strategy_kwargs) -> tuple[ExperimentRun, Recording]:
    config = load_config(tiny_config(folder, "fedavg", sites=2, common={"strategy": {"kwargs": strategy_kwargs}}))
    runner = ExperimentRun(config, folder / "run", strategy=Recording(**config.strategy.kwargs))
    runner.summary = runner.execute()
    return runner, runner.strategy


def test_a_round_averages_the_sites_by_sample_count(tmp_path):
    # site 1 has 6 training images and site 2 has 6: make them differ so the weights matter
    runner, strategy = federated_run(tmp_path, rounds=2, local_epochs=1)
    first_round = [u for r, u in strategy.updates if r == 1]
    assert [u.site for u in first_round] == ["site1", "site2"]
    counts = [u.num_samples for u in first_round]
    name = next(k for k, v in first_round[0].weights.items() if v.is_floating_point() and v.ndim == 4)
    expected = sum(c * u.weights[name] for c, u in zip(counts, first_round)) / sum(counts)
    assert torch.allclose(strategy.aggregates[0][name], expected, atol=1e-7)
    assert not torch.equal(strategy.aggregates[0][name], first_round[0].weights[name])
    # round 2 starts from round 1's aggregate
    saved, info = runner.load_state(ROUND_STATE)
    assert info["round"] == 2 and len(info["digests"]) == 2
    assert torch.equal(saved[f"global/{name}"], strategy.aggregates[1][name])
    assert runner.summary["stages"] == ["round1", "round2"]
    assert runner.summary["dice"]["backward_transfer"] is None
    final = load_weights(runner.folder.checkpoints / "global" / "final.safetensors")
    assert torch.equal(final[name], strategy.aggregates[1][name])
    assert runner.folder.stage_weights() == [("round2", runner.folder.checkpoints / "global" / "final.safetensors", {})]


def test_fedbn_keeps_normalisation_at_each_site(tmp_path):
    runner, strategy = federated_run(tmp_path, rounds=1, local_epochs=1, keep_local_norm=True, norm_statistics="running")
    local_keys = strategy.local_keys(runner.task)
    saved, _ = runner.load_state(ROUND_STATE)
    state = {k[len("global/"):]: v for k, v in saved.items() if k.startswith("global/")}
    norm_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith("running_mean")}  # the U-Net's BatchNorms
    assert {k.rsplit(".", 1)[0] for k in local_keys} == norm_modules
    assert {k.rsplit(".", 1)[1] for k in local_keys} == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    for _, update in strategy.updates:
        assert not local_keys & set(update.weights), "a normalisation weight left its site"
        assert set(update.weights) == set(state) - local_keys
    initial = load_weights(runner.folder.checkpoints / "initial.safetensors")
    assert all(torch.equal(state[k], initial[k]) for k in local_keys), "the server's copy of a local weight changed"
    running_mean = next(k for k in local_keys if k.endswith("running_mean"))
    kept = {site: SiteStore(runner.site_folder(site)).load("local", before=2) for site in ("site1", "site2")}
    assert set(kept["site1"]) == local_keys
    assert not torch.equal(kept["site1"][running_mean], kept["site2"][running_mean])
    assert not torch.equal(kept["site1"][running_mean], initial[running_mean])
    own = load_weights(runner.folder.checkpoints / "global" / "final_site2.safetensors")  # site 2's own model
    assert torch.equal(own[running_mean], kept["site2"][running_mean])


def test_fedprox_stays_closer_to_the_global_weights(tmp_path):
    results = {}
    for name, strategy in (("fedavg", FedAvgStrategy(rounds=1, local_epochs=6)), ("fedprox", FedProxStrategy(rounds=1, local_epochs=6, mu=100.0))):
        folder = tmp_path / name
        folder.mkdir()
        config = load_config(tiny_config(folder, "fedavg", sites=1))
        runner = ExperimentRun(config, folder / "run", strategy=strategy)
        start = runner.start(config.site_runs[0], lambda: strategy.build_network(runner.task)).weights
        update = strategy.local_update(FederatedSite(runner, config.site_runs[0]), start, 1)
        results[name] = sum((update.weights[k] - start[k]).pow(2).sum() for k in start if start[k].is_floating_point() and "running" not in k)
    assert results["fedprox"] < 0.5 * results["fedavg"]


def test_a_failing_site_is_logged_by_name_and_the_round_goes_on(tmp_path, caplog):
    config = load_config(tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 1, "min_sites": 1}}}))
    class LosingSite2(FedAvgStrategy):
        """Site 2's training data vanishes after the checks before training, mid-study."""

        def site_step(self, site, received, round_number):
            if site.name == "site2":
                shutil.rmtree(next(Path(site.site_run.site.dataset.kwargs["root_path"]).glob("*/Domain2/train/image")))
            return super().site_step(site, received, round_number)

    runner = ExperimentRun(config, tmp_path / "run", strategy=LosingSite2(**config.strategy.kwargs))
    with caplog.at_level(logging.ERROR):
        summary = runner.execute()
    assert "round 1: site site2 failed" in caplog.text
    assert summary["stages"] == ["round1"]

    strict = tmp_path / "strict"
    strict.mkdir()
    config = load_config(tiny_config(strict, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 1}}}))
    with pytest.raises(RuntimeError, match="round 1: 1 of 2 sites sent a usable update, fewer than min_sites=2"):
        ExperimentRun(config, strict / "run", strategy=LosingSite2(**config.strategy.kwargs)).execute()


@pytest.mark.slow
def test_a_killed_federation_resumes_after_its_last_round(tmp_path):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 3}}})
    run_dir = tmp_path / "exps" / "fedavg" / "t"
    state = run_dir / "checkpoints" / "global" / "round_state.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(tmp_path / "exps")]
    kill_once_written(command, state, cwd=tmp_path, env=env)
    runner = ExperimentRun(load_config(config), run_dir)
    _, info = runner.load_state(ROUND_STATE)
    assert info["round"] < 3, "the run finished before it could be interrupted"
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming the federation after round {info['round']}" in result.stderr
    summary = json.loads((run_dir / "results" / "summary.json").read_text())
    assert summary["stages"] == ["round1", "round2", "round3"]


def test_the_one_pass_weighted_sum_equals_the_reference():
    from siteflow import kernels
    from siteflow.kernels import reference

    assert kernels.backend() == "compiled"
    torch.manual_seed(0)
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        tensors = [torch.randn(3, 70001, dtype=dtype) for _ in range(5)]
        tensors[2] = tensors[2].t().contiguous().t()  # a non-contiguous input
        weights = [0.1, 0.2, 0.3, 0.25, 0.15]
        expected = reference.weighted_sum(tensors, weights)
        assert torch.allclose(kernels.weighted_sum(tensors, weights), expected, atol=tolerance, rtol=0)
        out = torch.empty(3, 70001, dtype=dtype)
        assert kernels.weighted_sum(tensors, weights, out=out) is not None
        assert torch.allclose(out, expected, atol=tolerance, rtol=0)
    with pytest.raises(RuntimeError, match="out must not share memory with an input"):
        kernels.weighted_sum(tensors, weights, out=tensors[0])
    result = weighted_average([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}], [0.25, 0.75])
    assert torch.equal(result["w"], torch.tensor([2.5, 5.0]))


def test_the_server_leaves_bad_replies_out_with_the_site_and_the_reason(tmp_path, caplog):
    from siteflow.strategies.federated import Federation, SiteUpdate, TooFewSites

    config = load_config(tiny_config(tmp_path, "fedavg", sites=3, common={"strategy": {"kwargs": {"rounds": 1, "min_sites": 1}}}))
    runner = ExperimentRun(config, tmp_path / "run")
    federation = Federation(runner.strategy, runner)
    start = federation.global_weights
    good = {k: v + 1 if v.is_floating_point() else v for k, v in start.items()}
    name = next(k for k, v in start.items() if v.is_floating_point() and v.ndim == 4)
    poisoned = {**good, name: good[name].clone().fill_(float("nan"))}
    retyped = {**good, name: good[name].double()}
    replies = [
        SiteUpdate("site1", good, 4),
        SiteUpdate("site2", poisoned, 4),
        SiteUpdate("site3", retyped, 4),
        SiteUpdate("site1", start, 4),
        SiteUpdate("site9", good, 4),
        SiteUpdate("site2", good, 0),
    ]
    with caplog.at_level(logging.ERROR):
        federation.close_round(1, replies, num_sites=3)
    assert all(torch.equal(federation.global_weights[k], good[k]) for k in good), "only site 1's update is valid"
    for expected in (
        f"site site2 left out of the average: {name} holds values that are not finite",
        f"site site3 left out of the average: {name} is torch.float64",
        "site site1 left out of the average: a second reply in the same round",
        "site site9 left out of the average: it is not a site of this study",
        "site site2 left out of the average: sample count 0 is not a positive integer",
    ):
        assert expected in caplog.text
    extra = {**good, "unknown.weight": torch.ones(1)}
    with caplog.at_level(logging.ERROR):
        federation.close_round(2, [SiteUpdate("site1", good, 4), SiteUpdate("site2", extra, 4)], num_sites=3)
    assert "site site2 left out of the average: it sends other tensors than site site1 (extra ['unknown.weight'], lacking [])" in caplog.text
    with pytest.raises(TooFewSites, match="round 3: 0 of 3 sites sent a usable update, fewer than min_sites=1"):
        federation.close_round(3, [SiteUpdate("site1", {}, 4)], num_sites=3)
    assert "site site1 left out of the average: " in caplog.text and "weights are missing" in caplog.text
