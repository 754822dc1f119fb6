"""Secure aggregation on Flower (SecAgg+): a real SuperLink and three SuperNodes with their
site workers, one site dropping out mid-round; the settings and the strategies it refuses.

The expected global weights are the plaintext average, computed here from each site's round
reproduced in this process (``by_hand`` of tests/test_federated_flower.py); SecAgg+ gives it up
to its quantisation: each site's update, scaled by its weight ``n / max_weight``, is rounded to
one of ``quantization_range`` levels over ``[-clipping_range, clipping_range]``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from experiments import tiny_config
from flower_local import APP, LocalFederation
from test_federated_flower import by_hand, hospitals

from siteflow.config import load_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import STRATEGIES
from siteflow.datasets.pooling import build_dataset
from siteflow.deploy.flower.protocol import RunSettings, SecureSettings, SettingsError
from siteflow.deploy.flower.secure import check_strategy
from siteflow.engine.runner import ExperimentRun


@pytest.mark.slow
def test_secagg_gives_the_plaintext_average_within_its_quantisation_and_survives_a_site_dropping_out(tmp_path):
    config = tiny_config(tmp_path, "fedavg", sites=3, common={"strategy": {"kwargs": {"rounds": 1, "min_sites": 2}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")
    build_dataset(server.config.sites[2], "train")  # writes the synthetic sites, once
    shutil.rmtree(next((tmp_path / "data").glob("*/Domain3/train/image")))  # site 3 fails when it trains
    stdout = secure_run(tmp_path, config, sites=3, max_weight=8.0)
    assert "round 1: site site3 dropped out of the secure round" in stdout
    assert re.search(r"round 1: aggregated (site1 \(4 samples\), site2|site2 \(4 samples\), site1) \(4 samples\)\n", stdout)

    expected = by_hand(config, tmp_path / "by_hand", rounds=1, task_ids=(1, 2))[0]  # the survivors' plaintext average
    final = load_weights(server.folder.checkpoints / "global" / "final.safetensors")
    assert_secure_average(final, expected, max_weight=8.0, samples=[4, 4])  # two sites of 4 training samples


def secure_run(tmp_path: Path, config: Path, *, sites: int, max_weight: float) -> str:
    """Run ``config`` deployed on a local federation of ``sites`` SuperNodes with their site
    workers, under SecAgg+ with ``secagg-max-weight``; returns the run's output (it must succeed)."""
    local = LocalFederation(tmp_path, hospitals(tmp_path, sites), workers=True)
    try:
        run_config = (f"config='{config}' note='t' exps-root='{tmp_path / 'server'}' wait-for-sites=120 "
                      f"secure-aggregation=true secagg-max-weight={max_weight}")
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=400)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    finally:
        local.close()  # fails if any process it started is still alive
    return result.stdout


def assert_secure_average(final: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, max_weight: float, samples: list[int]) -> None:
    """``final`` is the plaintext weighted average ``expected`` of sites with ``samples``
    training samples up to SecAgg+'s quantisation (each site's rounding under one level), and
    not equal to it (the server summed quantised, masked vectors, not the plaintext updates)."""
    settings = SecureSettings(max_weight=max_weight)
    ratio_sum = sum(samples) / settings.max_weight
    step = 2 * settings.clipping_range / settings.quantization_range  # one quantisation level
    tolerance = len(samples) * step / ratio_sum
    differences = [float((final[name] - expected[name]).abs().max()) for name in expected if expected[name].is_floating_point()]
    assert 0 < max(differences) <= tolerance, (max(differences), tolerance)
    assert all(torch.equal(final[name], expected[name]) for name in expected if not expected[name].is_floating_point())


def test_secure_aggregation_is_switched_on_by_the_run_config_and_its_settings_are_checked():
    assert RunSettings.from_run_config({"config": "demo/fedavg"}).secure is None
    on = RunSettings.from_run_config({"config": "demo/fedavg", "secure-aggregation": True, "secagg-threshold": 0.7})
    assert on.secure == SecureSettings(threshold=0.7)
    for run_config, message in [
        ({"secure-aggregation": "yes"}, "secure-aggregation must be of type bool, got 'yes'"),
        ({"secagg-max-weight": 0}, "secagg-max-weight must be positive, got 0.0"),  # checked even while off
        ({"secure-aggregation": True, "secagg-threshold": 0.0}, "secagg-threshold must be in (0, 1], got 0.0"),
        ({"secure-aggregation": True, "secagg-clipping-range": -1.0}, "secagg-clipping-range must be positive, got -1.0"),
        ({"secure-aggregation": True, "secagg-quantization-range": 1000}, "secagg-quantization-range must be a power of 2"),
    ]:
        with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RunSettings.from_run_config({"config": "demo/fedavg", **run_config})


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi", "ffl"])
def test_strategies_that_need_only_the_weighted_average_run_under_secagg(name):
    check_strategy(STRATEGIES.get(name)(), name)


def test_scaffold_is_refused_under_secagg_naming_the_switch():
    with pytest.raises(ValueError, match=r"secure-aggregation=true: strategy 'scaffold' \(common.strategy.name\) aggregates more"):
        check_strategy(STRATEGIES.get("scaffold")(), "scaffold")


def test_central_dp_is_refused_under_secagg_naming_both_keys():
    try:
        strategy = STRATEGIES.get("fedavg")(weighting="equal", central_dp={"noise_multiplier": 1.0, "clip_norm": 1.0})
    except (TypeError, ValueError) as error:  # the central DP options as the strategy declares them
        pytest.skip(f"central_dp options differ: {error}")
    with pytest.raises(ValueError, match=r"secure-aggregation=true: common.strategy.kwargs.central_dp clips each site's update"):
        check_strategy(strategy, "fedavg")
