"""The server optimisers (fedavgm, fedadam, fedyogi, fedadagrad): rounds by hand against the
equations of Reddi et al. (ICLR 2021) and Hsu et al. (2019), their state across a restart,
the weights they leave to FedAvg, a real run, and their refused options. (A killed run
resuming to the same weights: tests/test_resume.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from experiments import tiny_config
from siteflow.config import ConfigError, load_config
from siteflow.core.atomic import load_weights
from siteflow.core.registry import STRATEGIES
from siteflow.engine.runner import ExperimentRun
from siteflow.strategies.federated import ROUND_STATE, FedAvgStrategy, SiteUpdate

LR, BETA1, BETA2, TAU = 0.1, 0.9, 0.99, 1e-3


def network() -> nn.Module:
    """A linear layer and a batch norm: parameters "0.weight" (1, 2), "0.bias", "1.weight",
    "1.bias"; buffers "1.running_mean", "1.running_var", "1.num_batches_tracked"."""
    return nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))


def weights(w: list[float], bias: float, running_mean: float, batches: int) -> dict[str, torch.Tensor]:
    return {
        "0.weight": torch.tensor([w]), "0.bias": torch.tensor([bias]), "1.weight": torch.tensor([1.0]),
        "1.bias": torch.tensor([0.0]), "1.running_mean": torch.tensor([running_mean]),
        "1.running_var": torch.tensor([1.0]), "1.num_batches_tracked": torch.tensor(batches),
    }


def paper(name: str, deltas: list[float]) -> list[float]:
    """The server's step of every round, for one coordinate whose pseudo-gradients
    (average - global) are ``deltas``: Reddi et al. Algorithm 2 (m_{-1} = 0, v_{-1} = tau^2)
    and Hsu et al.'s server momentum, with this file's hyperparameters."""
    m, v, steps = 0.0, TAU**2, []
    for delta in deltas:
        if name == "fedavgm":
            m = BETA1 * m + delta
            steps.append(LR * m)
            continue
        m = (0.0 if name == "fedadagrad" else BETA1) * m + (1 - (0.0 if name == "fedadagrad" else BETA1)) * delta
        if name == "fedadam":
            v = BETA2 * v + (1 - BETA2) * delta**2
        elif name == "fedyogi":
            v = v - (1 - BETA2) * delta**2 * math.copysign(1.0, v - delta**2)
        else:
            v = v + delta**2
        steps.append(LR * m / (math.sqrt(v) + TAU))
    return steps


def options(name: str) -> dict:
    if name == "fedavgm":
        return {"server_lr": LR, "momentum": BETA1}
    if name == "fedadagrad":
        return {"server_lr": LR, "tau": TAU}
    return {"server_lr": LR, "beta1": BETA1, "beta2": BETA2, "tau": TAU}


def built(name: str):
    strategy = STRATEGIES.get(name)(**options(name))
    strategy.prepare_server(network(), ["a", "b"])
    return strategy


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_two_rounds_by_hand_follow_the_papers_equations_across_a_restart(name):
    x0 = weights([1.0, -2.0], 0.5, 0.0, 3)
    # round 1: site a (1 sample) and b (3 samples); the average is [2, -1.25], bias 0.5 + 0.75 * 0.2
    first = [SiteUpdate("a", weights([2.0, -2.0], 0.5, 4.0, 5), 1), SiteUpdate("b", weights([2.0, -1.0], 0.7, 0.0, 9), 3)]
    strategy = built(name)
    x1 = strategy.aggregate(1, x0, first)
    deltas1 = [1.0, 0.75, 0.15]  # weight[0], weight[1], bias
    expected1 = [start + step[0] for start, step in zip([1.0, -2.0, 0.5], (paper(name, [d]) for d in deltas1))]
    assert torch.allclose(x1["0.weight"], torch.tensor([expected1[:2]]), atol=1e-6)
    assert torch.allclose(x1["0.bias"], torch.tensor([expected1[2]]), atol=1e-6)

    # round 2 on a server restarted from the saved state: every site sends x1 + [-0.5, 0.5], bias + 0.1
    resumed = built(name)
    resumed.load_state_dict({key: tensor.clone() for key, tensor in strategy.state_dict().items()})
    moved = {**x1, "0.weight": x1["0.weight"] + torch.tensor([[-0.5, 0.5]]), "0.bias": x1["0.bias"] + 0.1}
    x2 = resumed.aggregate(2, x1, [SiteUpdate("a", moved, 1), SiteUpdate("b", moved, 3)])
    deltas2 = [-0.5, 0.5, 0.1]
    expected2 = [x + paper(name, [d1, d2])[1] for x, d1, d2 in zip([*x1["0.weight"][0].tolist(), x1["0.bias"].item()], deltas1, deltas2)]
    assert torch.allclose(x2["0.weight"], torch.tensor([expected2[:2]]), atol=1e-6)
    assert torch.allclose(x2["0.bias"], torch.tensor([expected2[2]]), atol=1e-6)
    assert {key.split("/", 1)[1] for key in resumed.state_dict()} == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_buffers_integer_counters_and_local_weights_take_fedavg_s_values():
    strategy = built("fedadam")
    x0 = weights([1.0, -2.0], 0.5, 0.0, 3)
    sent = [
        SiteUpdate("a", {k: v for k, v in weights([2.0, -2.0], 0.5, 4.0, 5).items() if k != "1.bias"}, 1),
        SiteUpdate("b", {k: v for k, v in weights([2.0, -1.0], 0.7, 0.0, 9).items() if k != "1.bias"}, 3),
    ]  # "1.bias" stays at the sites (as FedBN's layers do)
    result = strategy.aggregate(1, x0, sent)
    assert result["1.running_mean"].item() == pytest.approx(1.0)  # 0.25 * 4 + 0.75 * 0: the average, not a step
    assert result["1.num_batches_tracked"].item() == 9 and result["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(result["1.bias"], x0["1.bias"])
    assert "m/1.bias" not in strategy.state_dict() and "m/1.running_mean" not in strategy.state_dict()


def test_fedavgm_without_momentum_at_rate_1_is_fedavg():
    strategy = STRATEGIES.get("fedavgm")(server_lr=1.0, momentum=0.0)
    strategy.prepare_server(network(), ["a", "b"])
    x0 = weights([1.0, -2.0], 0.5, 0.0, 3)
    updates = [SiteUpdate("a", weights([2.0, -2.0], 0.5, 4.0, 5), 1), SiteUpdate("b", weights([2.0, -1.0], 0.7, 0.0, 9), 3)]
    expected = FedAvgStrategy().aggregate(1, x0, updates)
    got = strategy.aggregate(1, x0, updates)
    assert all(torch.allclose(got[k].double(), expected[k].double(), atol=1e-7) for k in expected)


def test_the_initial_second_moment_is_tau_squared_unless_set():
    assert STRATEGIES.get("fedadam")(tau=0.01).initial_v == pytest.approx(1e-4)
    assert STRATEGIES.get("fedyogi")(tau=0.01, initial_v=0.0).initial_v == 0.0  # Flower's and FLamby's start


def test_fedadam_runs_rounds_and_saves_its_moments_with_them(tmp_path):
    config = load_config(tiny_config(tmp_path, "fedadam", sites=2, common={"strategy": {"kwargs": {"rounds": 2, "server_lr": 0.05}}}))
    run = ExperimentRun(config, tmp_path / "run")
    summary = run.execute()
    assert summary["stages"] == ["round1", "round2"]
    saved, info = run.load_state(ROUND_STATE)
    parameters = {name for name, _ in run.strategy.build_network(run.task).named_parameters()}
    for moment in ("m", "v"):
        assert {k[len(f"strategy/{moment}/"):] for k in saved if k.startswith(f"strategy/{moment}/")} == parameters
    final = load_weights(run.folder.checkpoints / "global" / "final.safetensors")
    assert all(torch.equal(final[k], saved[f"global/{k}"]) for k in final)
    initial = load_weights(run.folder.checkpoints / "initial.safetensors")
    name = next(iter(sorted(parameters)))
    assert not torch.equal(final[name], initial[name])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("fedadam", {"server_lr": 0}, "common.strategy.kwargs: server_lr must be positive, got 0"),
        ("fedavgm", {"server_lr": -1.0}, "common.strategy.kwargs: server_lr must be positive, got -1.0"),
        ("fedyogi", {"tau": 0.0}, "common.strategy.kwargs: tau must be positive, got 0.0"),
        ("fedadam", {"beta2": 1.0}, "common.strategy.kwargs: beta2 must be in [0, 1), got 1.0"),
        ("fedadagrad", {"initial_v": -0.1}, "common.strategy.kwargs: initial_v must be non-negative, got -0.1"),
        ("fedavgm", {"momentum": 1.5}, "common.strategy.kwargs: momentum must be in [0, 1), got 1.5"),
        ("fedadagrad", {"beta2": 0.9}, "common.strategy.kwargs.beta2: unknown option; did you mean 'beta1'?"),
    ],
)
def test_a_wrong_server_option_is_one_config_error_naming_it(tmp_path, name, kwargs, message):
    with pytest.raises(ConfigError) as error:
        load_config(tiny_config(tmp_path, name, common={"strategy": {"kwargs": kwargs}}))
    assert message in str(error.value)


@pytest.mark.slow
def test_fedadam_on_flower_gives_the_simulated_weights_and_moments(tmp_path):
    from flower_local import simulated_and_deployed

    config = tiny_config(tmp_path, "fedadam", sites=2, common={"strategy": {"kwargs": {"rounds": 2, "server_lr": 0.05}}})
    simulated, deployed = simulated_and_deployed(tmp_path, config)
    (deployed_state, deployed_info), (simulated_state, simulated_info) = deployed.load_state(ROUND_STATE), simulated.load_state(ROUND_STATE)
    assert deployed_info["round"] == 2 and deployed_info["digests"] == simulated_info["digests"]
    moments = [k for k in simulated_state if k.startswith("strategy/")]
    assert moments and all(torch.equal(deployed_state[k], simulated_state[k]) for k in moments)
