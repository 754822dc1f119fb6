"""Continual-learning baselines (ewc, si, lwf, owm): each algorithm's pieces against a hand
computation on a tiny model, the options' errors, one tiny run per strategy, and a deployed
run across separate processes that ends with the simulated run's weights."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from experiments import deploy_site_by_site, tiny_config
from siteflow.config import ConfigError, TrainConfig, load_config
from siteflow.core.atomic import load_weights
from siteflow.engine.runner import ExperimentRun
from siteflow.handover import read_manifest
from siteflow.losses.cross_entropy import CrossEntropyLoss
from siteflow.strategies import SiteInput
from siteflow.strategies.continual import CarryingNetwork, OWMStrategy, TensorTree
from siteflow.strategies.continual.base import QuadraticPenalty, zeros_like_parameters
from siteflow.strategies.continual.ewc import consolidate, empirical_fisher
from siteflow.strategies.continual.lwf import DistillationTerm
from siteflow.strategies.continual.owm import ProjectedLayer, projected_layers, update_projector
from siteflow.strategies.continual.si import PathIntegral
from siteflow.tasks import SegmentationLearner

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STRATEGIES = ("ewc", "si", "lwf", "owm")


# -- the carried tensors ---------------------------------------------------------------------


def test_carried_tensors_sit_beside_the_solver_under_its_parameter_names():
    solver = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    network = CarryingNetwork(solver, {"fisher": zeros_like_parameters(solver)})
    keys = set(network.state_dict())
    assert {"fisher.0.weight", "fisher.0.bias", "fisher.1.weight", "fisher.1.bias"} <= keys
    assert "solver.1.running_mean" in keys and "fisher.1.running_mean" not in keys  # parameters only
    assert network.tree("fisher")["0.weight"].shape == (2, 1, 3, 3)
    tree = TensorTree({"a.b": torch.ones(2), "a.c": torch.zeros(1)})
    assert [name for name, _ in tree.items()] == ["a.b", "a.c"] and set(tree.state_dict()) == {"a.b", "a.c"}


def test_the_quadratic_penalty_weighs_each_squared_move_by_its_importance():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
    importance = TensorTree({"weight": torch.tensor([[2.0, 0.5]])})
    anchor = TensorTree({"weight": torch.tensor([[0.0, 1.0]])})
    learner = SegmentationLearner(model, CrossEntropyLoss(), train=TrainConfig(), class_names=("a", "b"))
    # 0.25 * (2 * 1^2 + 0.5 * 2^2) = 1
    assert QuadraticPenalty(importance, anchor, 0.25)(learner).item() == pytest.approx(1.0)


# -- EWC ---------------------------------------------------------------------------------------


def test_the_fisher_is_the_mean_squared_per_sample_gradient_of_the_loss():
    """A 1x1 convolution over one-pixel images is softmax regression: the cross-entropy's
    gradient of sample n is ``(p_n - onehot(y_n)) x_n^T``."""
    model = nn.Conv2d(2, 2, 1, bias=False)
    weight = torch.tensor([[0.5, -1.0], [1.5, 0.25]])
    with torch.no_grad():
        model.weight.copy_(weight[:, :, None, None])
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1])
    batches = [{"image": x[:2, :, None, None], "label": y[:2, None, None], "id": ["a", "b"]},
               {"image": x[2:, :, None, None], "label": y[2:, None, None], "id": ["c"]}]
    learner = SegmentationLearner(model, CrossEntropyLoss(), train=TrainConfig(), class_names=("a", "b"))
    fisher = empirical_fisher(learner, batches)
    expected = torch.zeros(2, 2)
    for n in range(3):
        p = torch.softmax(weight @ x[n], 0)
        expected += torch.outer(p - F.one_hot(y[n], 2).float(), x[n]) ** 2 / 3
    assert torch.allclose(fisher["weight"][:, :, 0, 0], expected, atol=1e-6)
    assert torch.allclose(empirical_fisher(learner, batches, max_samples=1)["weight"][:, :, 0, 0],
                          torch.outer(torch.softmax(weight @ x[0], 0) - torch.tensor([1.0, 0.0]), x[0]) ** 2, atol=1e-6)
    assert model.training  # the mode is given back


def test_consolidation_keeps_the_gradient_of_one_penalty_per_site():
    fisher = TensorTree({"w": torch.zeros(3)})
    anchor = TensorTree({"w": torch.zeros(3)})
    f1, t1 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, -1.0])
    f2, t2 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([1.5, 2.0, 4.0])
    consolidate(fisher, anchor, {"w": f1}, {"w": t1}, online=False, gamma=1.0)
    assert torch.equal(anchor["w"], t1)
    consolidate(fisher, anchor, {"w": f2}, {"w": t2}, online=False, gamma=1.0)
    theta = torch.tensor([0.3, -0.7, 2.0])
    separate = 2 * (f1 * (theta - t1) + f2 * (theta - t2))  # d/dtheta of sum_k F_k (theta - theta_k)^2
    assert torch.allclose(2 * fisher["w"] * (theta - anchor["w"]), separate)
    assert anchor["w"][1].item() == 2.0  # no information anywhere: the last weights

    online_fisher, online_anchor = TensorTree({"w": f1.clone()}), TensorTree({"w": t1.clone()})
    consolidate(online_fisher, online_anchor, {"w": f2}, {"w": t2}, online=True, gamma=0.5)
    assert torch.allclose(online_fisher["w"], 0.5 * f1 + f2) and torch.equal(online_anchor["w"], t2)


# -- SI ----------------------------------------------------------------------------------------


def test_si_importance_after_two_sgd_steps():
    """Loss ``0.5 * sum a theta^2`` and SGD at lr: g_t = a theta_t, theta_{t+1} = theta_t - lr g_t,
    so omega = lr (g_0^2 + g_1^2) and Omega = omega / ((theta_2 - theta_0)^2 + xi)."""
    a, lr, xi = torch.tensor([1.0, 4.0]), 0.1, 0.01
    theta = nn.Parameter(torch.tensor([2.0, -1.0]))
    path = PathIntegral({"theta": theta})
    optimizer = torch.optim.SGD([theta], lr=lr)
    for _ in range(2):
        optimizer.zero_grad()
        (0.5 * (a * theta**2).sum()).backward()
        path.before_step()
        optimizer.step()
        path.after_step()
    t0 = torch.tensor([2.0, -1.0])
    g0 = a * t0
    t1 = t0 - lr * g0
    g1 = a * t1
    t2 = t1 - lr * g1
    omega = lr * (g0**2 + g1**2)
    assert torch.allclose(path.omega["theta"], omega)
    assert torch.allclose(path.importance(xi)["theta"], omega / ((t2 - t0) ** 2 + xi))
    assert torch.allclose(theta.detach(), t2)


# -- LwF ---------------------------------------------------------------------------------------


def test_lwf_term_at_a_known_pair_of_outputs():
    """Student logits (1, 0), teacher logits (0, 1), T = 2, weight 0.5:
    0.5 * -T^2 * sum_c softmax(t / T)_c log softmax(s / T)_c."""
    student = nn.Identity()  # its input is its logits
    teacher = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        teacher.weight.zero_()
        teacher.bias.copy_(torch.tensor([0.0, 1.0]))
    term = DistillationTerm(student, teacher, weight=0.5, temperature=2.0)
    logits = torch.tensor([1.0, 0.0])[None, :, None, None].requires_grad_()
    student(logits)  # the training step's forward pass
    learner = SegmentationLearner(student, CrossEntropyLoss(), train=TrainConfig(), class_names=("a", "b"))
    value = term(learner)
    e = math.exp(0.5)
    p_teacher = (1 / (1 + e), e / (1 + e))
    log_q = (0.5 - math.log(e + 1), -math.log(e + 1))
    assert value.item() == pytest.approx(0.5 * -4 * sum(p * q for p, q in zip(p_teacher, log_q)), rel=1e-6)
    value.backward()
    assert logits.grad is not None and teacher.bias.grad is None  # the teacher stays frozen
    with pytest.raises(RuntimeError, match="before the training step's forward pass"):
        term(learner)


# -- OWM ---------------------------------------------------------------------------------------


def test_owm_projector_is_the_regularised_inverse_and_keeps_gradients_off_stored_inputs():
    x1, x2 = torch.tensor([1.0, 2.0, 0.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, 1.0])
    projector = torch.eye(4)
    for x in (x1, x2):
        update_projector(projector, x, 0.5)
    inputs = torch.stack([x1, x2])
    assert torch.allclose(projector, 0.5 * torch.linalg.inv(0.5 * torch.eye(4) + inputs.T @ inputs), atol=1e-5)

    strict = torch.eye(4, dtype=torch.float64)
    for x in (x1, x2):
        update_projector(strict, x.double(), 1e-8)
    gradient = torch.tensor([[0.3, -1.0, 2.0, 0.5], [1.0, 1.0, -0.5, 0.0]], dtype=torch.float64)
    projected = gradient @ strict
    assert torch.allclose(projected @ inputs.double().T, torch.zeros(2, 2, dtype=torch.float64), atol=1e-6)
    free = torch.tensor([1.0, 0.0, -1.0, 1.0], dtype=torch.float64)  # orthogonal to x1 and x2
    assert torch.allclose(projected @ free, gradient @ free, atol=1e-6)


def test_owm_reads_a_conv_layer_as_a_matrix_on_its_patches():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    layer = ProjectedLayer("conv", conv)
    assert layer.key == "conv.weight" and layer.fan_in == 2 * 9 + 1
    images = torch.randn(2, 2, 5, 5)
    x = layer.mean_input(images)
    patches = F.unfold(images, 3, padding=1)  # (N, 18, 25)
    assert torch.allclose(x[:-1], patches.mean((0, 2)), atol=1e-6) and x[-1] == 1
    # the layer's output summed over positions is its matrix times the mean patch (plus bias)
    assert torch.allclose(conv(images).mean((0, 2, 3)), layer.matrix() @ x, atol=1e-5)
    layer.set_matrix(layer.matrix() * 2)
    assert torch.allclose(conv.bias, layer.matrix()[:, -1])


def test_owm_refuses_a_model_without_a_supported_layer_and_an_oversized_projector():
    with pytest.raises(ValueError, match=r"common\.model: owm projects the updates of nn\.Linear.*; Sequential has none"):
        OWMStrategy().carried_trees(nn.Sequential(nn.ConvTranspose2d(1, 2, 2), nn.BatchNorm2d(2)))
    with pytest.raises(ValueError, match=r"max_fan_in: layer '1' \(Linear\) has 101 inputs.*max_fan_in is 50"):
        projected_layers(nn.Sequential(nn.Conv2d(1, 1, 3, groups=1), nn.Linear(100, 2)), max_fan_in=50)
    layers = projected_layers(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Linear(3, 2)), max_fan_in=50)
    assert [layer.name for layer in layers] == ["1"]  # grouped convolutions train unprojected


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "options", "message"),
    [
        ("ewc", {"ewc_lambda": -1.0}, "ewc_lambda must be non-negative"),
        ("ewc", {"online": True, "gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ("si", {"c": -0.5}, "c must be non-negative"),
        ("si", {"xi": 0.0}, "xi must be positive"),
        ("lwf", {"temperature": 0.0}, "temperature must be positive"),
        ("lwf", {"weight": -1.0}, "weight must be non-negative"),
        ("owm", {"alpha": -1.0}, "alpha must be positive"),
        ("owm", {"alphaa": 1.0}, "unknown option; did you mean 'alpha'"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(tmp_path, strategy, options, message):
    path = tiny_config(tmp_path, strategy, common={"strategy": {"kwargs": options}})
    with pytest.raises(ConfigError, match=r"common\.strategy\.kwargs.*" + message):
        load_config(path)


# -- tiny runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, ExperimentRun]:
    """Each strategy over two tiny sites (one epoch each)."""
    made = {}
    for strategy in STRATEGIES:
        folder = tmp_path_factory.mktemp(strategy)
        runner = ExperimentRun(load_config(tiny_config(folder, strategy)), folder / "run")
        runner.execute()
        made[strategy] = runner
    return made


def handover(runner: ExperimentRun, site: int) -> dict[str, torch.Tensor]:
    return load_weights(runner.folder.checkpoints / f"task_{site}" / "handover.safetensors")


def solver_part(weights: dict[str, torch.Tensor], prefix: str = "solver.") -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: tensor for name, tensor in weights.items() if name.startswith(prefix)}


@pytest.mark.parametrize("strategy", ["ewc", "si"])
@pytest.mark.slow
def test_the_first_hand_over_anchors_the_penalty_at_the_first_sites_weights(runs, strategy):
    runner = runs[strategy]
    first = handover(runner, 1)
    importance_tree = "fisher" if strategy == "ewc" else "importance"
    importance, anchor = solver_part(first, f"{importance_tree}."), solver_part(first, "anchor.")
    solver = solver_part(first)
    assert anchor.keys() == importance.keys() and anchor.keys() <= solver.keys()
    for name in anchor:
        assert torch.equal(anchor[name], solver[name]), name
        assert (importance[name] >= 0).all()
    assert sum(tensor.sum() for tensor in importance.values()) > 0
    # the second site's penalty pulled towards the anchor: its importance grew, the anchor moved
    second = handover(runner, 2)
    assert all((second[f"{importance_tree}.{n}"] >= importance[n] - 1e-7).all() for n in importance)
    assert [s.task_id for s in read_manifest(runner.folder.checkpoints / "task_2" / "handover.safetensors").sites] == [1, 2]


@pytest.mark.parametrize(("strategy", "tree"), [("ewc", "fisher"), ("si", "importance")])
def test_a_site_after_the_first_trains_with_the_penalty_of_what_it_received(runs, strategy, tree):
    runner = runs[strategy]
    scale = runner.strategy.ewc_lambda / 2 if strategy == "ewc" else runner.strategy.c
    received = handover(runner, 1)
    network = runner.strategy.build_network(runner.task)
    network.load_state_dict(received)
    site = runner.site_runs[1]
    assert runner.strategy.make_learner(runner, network, [site], SiteInput(received)).extra_losses == []  # nothing received
    learner = runner.strategy.make_learner(runner, network, [site], SiteInput(received, (runner.site_record(runner.site_runs[0]),)))
    with torch.no_grad():
        for parameter in network.solver.parameters():
            parameter.add_(0.1)  # the anchor is the received solver: every parameter moves by 0.1
    importance = solver_part(received, f"{tree}.")
    expected = scale * sum(0.01 * value.sum() for value in importance.values())
    (penalty,) = learner.extra_losses
    assert penalty(learner).item() == pytest.approx(float(expected), rel=1e-4)


def test_lwf_hands_over_the_solver_alone(runs):
    weights = handover(runs["lwf"], 2)
    assert not any(name.startswith(("solver.", "anchor.")) for name in weights)
    assert "head.weight" in weights


def test_owm_projectors_shrink_along_the_inputs_seen(runs):
    projectors = solver_part(handover(runs["owm"], 2), "projectors.")
    assert "head.weight" in projectors and "encoder.levels.0.0.weight" in projectors
    for name, projector in projectors.items():
        assert torch.allclose(projector, projector.T, atol=1e-4), name
        eigenvalues = torch.linalg.eigvalsh((projector + projector.T) / 2)
        assert eigenvalues.min() > -1e-4 and eigenvalues.max() < 1 + 1e-4, name
        assert eigenvalues.min() < 0.5, name  # some direction was stored


@pytest.mark.parametrize("strategy", ["ewc", "si", "owm"])
def test_a_site_resumed_from_its_last_epoch_still_folds_what_it_learnt(runs, tmp_path, strategy):
    """Killed after the last epoch's checkpoint but before its final weights: the resumed fit
    trains no more (Lightning skips its training hooks), and the hand-over is the same."""
    runner = runs[strategy]
    copy = tmp_path / "run"
    shutil.copytree(runner.folder.path, copy)
    stage = copy / "checkpoints" / "task_2"
    (stage / "final.safetensors").unlink()
    (stage / "handover.safetensors").unlink()
    ExperimentRun(runner.config, copy).execute()
    resumed = load_weights(stage / "handover.safetensors")
    original = handover(runner, 2)
    assert resumed.keys() == original.keys()
    for name in original:
        assert torch.allclose(resumed[name], original[name], rtol=1e-5, atol=1e-7), name


# -- deployed across processes -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_deployed_run_in_separate_processes_ends_with_the_simulated_weights(runs, tmp_path, strategy):
    config = tiny_config(tmp_path, strategy)
    received = deploy_site_by_site(config, tmp_path, [1, 2], env=ENV)
    deployed = load_weights(received)
    simulated = handover(runs[strategy], 2)
    assert deployed.keys() == simulated.keys()
    for name in deployed:
        assert torch.allclose(deployed[name], simulated[name], rtol=1e-5, atol=1e-6), name
    assert [s.task_id for s in read_manifest(received).sites] == [1, 2]
