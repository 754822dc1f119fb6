"""Privacy: DP-SGD at the sites (Opacus), central DP on the server, their accounting, and the
replay-leak check; by hand on small tensors, against Opacus, and in tiny real runs."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn
from torch.utils.data import DataLoader, Dataset

from experiments import kill_once_written, tiny_config
from siteflow.config import ConfigError, load_config, parse_config
from siteflow.config.schema import DPSGDConfig
from siteflow.core.atomic import load_weights
from siteflow.engine.runner import ExperimentRun
from siteflow.privacy import CENTRAL_FILE, SITES_DIR
from siteflow.privacy.accounting import PrivacyLedger, epsilon, noise_for
from siteflow.privacy.central import CentralDP, CentralDPOptions, clip_update, update_norm
from siteflow.privacy.dp_sgd import PoissonBatchSampler, private_training
from siteflow.privacy.replay_leak import nearest_distances, plot_replay_leak, replay_leak, windows

REPO = Path(__file__).resolve().parent.parent

# -- accounting ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, accountant_class", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_the_epsilon_of_a_history_is_opacus_accountant_stepped_the_same_way(kind, accountant_class):
    reference = accountant_class()
    for noise, rate, steps in [(1.1, 0.05, 40), (0.9, 0.1, 25)]:
        for _ in range(steps):
            reference.step(noise_multiplier=noise, sample_rate=rate)
    expected = reference.get_epsilon(delta=1e-5)
    assert epsilon([(1.1, 0.05, 40), (0.9, 0.1, 25)], delta=1e-5, accountant=kind) == pytest.approx(expected, rel=1e-9)
    assert epsilon([], delta=1e-5) == 0.0


def test_the_noise_for_a_target_epsilon_spends_about_that_epsilon():
    noise = noise_for(3.0, delta=1e-5, sample_rate=0.1, steps=200)
    spent = epsilon([(noise, 0.1, 200)], delta=1e-5)
    assert 2.9 < spent <= 3.0  # Opacus' search stops within 0.01 below the target
    assert epsilon([(noise * 1.2, 0.1, 200)], delta=1e-5) < spent


def test_the_ledger_adds_up_a_sites_stages_and_a_rerun_stage_replaces_itself(tmp_path):
    ledger = PrivacyLedger(tmp_path, "site 1", delta=1e-5, accountant="rdp")
    first = ledger.record("round1/site1", noise_multiplier=1.0, sample_rate=0.2, steps=10)
    second = ledger.record("round2/site1", noise_multiplier=1.0, sample_rate=0.2, steps=10)
    assert first.epsilon == pytest.approx(epsilon([(1.0, 0.2, 10)], delta=1e-5))
    assert second.epsilon == pytest.approx(epsilon([(1.0, 0.2, 20)], delta=1e-5))
    again = ledger.record("round2/site1", noise_multiplier=1.0, sample_rate=0.2, steps=10)  # a crashed round re-run
    assert again.epsilon == second.epsilon and [s.stage for s in ledger.stages()] == ["round1/site1", "round2/site1"]
    assert json.loads((tmp_path / "site_1.json").read_text())["epsilon"] == second.epsilon
    assert ledger.noise_multiplier() == 1.0


# -- DP-SGD ----------------------------------------------------------------------------------


class Points(Dataset):
    """Items ``{"image": (3,) float, "label": () float}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.x[index], "label": self.y[index]}


class Regression(pl.LightningModule):
    """A linear model under the mean squared error, by SGD with learning rate 1."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.model = nn.Linear(3, 1, bias=False)
        self.loss = nn.MSELoss()
        self.extra_losses: list = []
        with torch.no_grad():
            self.model.weight.copy_(weight)

    def loss_of(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        return ((outputs[:, 0] - batch["label"]) ** 2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.loss_of(self.model(batch["image"]), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_dp_sgd_clips_every_samples_gradient_in_a_real_opacus_step(tmp_path):
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1.0, -1.0, 2.0, 0.0])
    w0 = torch.tensor([[0.5, 0.5, 0.5]])
    config = DPSGDConfig(noise_multiplier=1e-3, max_grad_norm=0.1)
    loader = DataLoader(Points(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    private, dp_sgd = private_training(config, loader, batch_size=4, folder=tmp_path, site="s", stage="one", seed=0)
    assert private.batch_sampler.sample_rate == 1.0  # every item in the one Poisson batch
    learner = Regression(w0)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[dp_sgd], accelerator="cpu").fit(learner, private)
    per_sample = 2 * ((x @ w0[0]) - y)[:, None] * x  # d/dw of (w.x - y)^2, one row per sample
    factors = torch.clamp(0.1 / per_sample.norm(dim=1), max=1.0)
    expected = w0[0] - (per_sample * factors[:, None]).sum(0) / 4
    assert (factors < 1).all()  # every sample was clipped...
    assert torch.allclose(learner.model.weight.detach()[0], expected, atol=1e-4)  # ...the noise is 1e-4 / 4
    assert not torch.allclose(learner.model.weight.detach()[0], w0[0] - per_sample.mean(0), atol=1e-2)
    (spent,) = PrivacyLedger(tmp_path, "s", delta=1e-5, accountant="rdp").stages()
    assert (spent.stage, spent.steps, spent.sample_rate, spent.noise_multiplier) == ("one", 1, 1.0, 1e-3)
    assert not learner.model._forward_hooks and not learner.model._backward_hooks  # Opacus' hooks are gone


def test_dp_sgd_refuses_a_loss_that_mixes_the_samples(tmp_path):
    class PooledLoss(Regression):
        def loss_of(self, outputs, batch):
            return ((outputs[:, 0] - batch["label"]) ** 2).mean().sqrt()  # sqrt of the batch mean

    x, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.arange(4.0)
    loader = DataLoader(Points(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    private, dp_sgd = private_training(DPSGDConfig(noise_multiplier=1.0), loader, batch_size=4, folder=tmp_path, site="s", stage="a", seed=0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[dp_sgd])
    with pytest.raises(ValueError, match=r"train\.dp_sgd: the loss .* is not the mean of its samples' losses"):
        trainer.fit(PooledLoss(torch.zeros(1, 3)), private)


def test_poisson_batches_are_seeded_and_carry_item_seeds():
    def batches(seed: int) -> list:
        sampler = PoissonBatchSampler(20, 0.25, torch.Generator().manual_seed(seed), item_seeds=True)
        return list(sampler)

    first = batches(3)
    assert first == batches(3) and first != batches(4)
    assert len(first) <= 4  # round(1 / 0.25) draws, an empty one skipped
    sizes = [len(batch) for batch in first]
    assert all(isinstance(index, int) and isinstance(seed, int) for batch in first for index, seed in batch)
    assert len(set(sizes)) > 1 or len(first) < 4  # Poisson: the sizes vary
    sampler = PoissonBatchSampler(3, 0.01, torch.Generator().manual_seed(0), item_seeds=False)  # mostly empty draws
    drawn = list(sampler)
    assert sampler.draws == 100 and len(drawn) + sampler.skipped == 100 and sampler.skipped > 90


# -- central DP ------------------------------------------------------------------------------


def test_clipping_bounds_a_hand_made_update():
    reference = {"w": torch.zeros(2, 2), "b": torch.ones(2), "steps": torch.tensor(3)}
    big = {"w": torch.tensor([[3.0, 0.0], [0.0, 4.0]]), "b": torch.ones(2), "steps": torch.tensor(5)}  # norm 5
    clipped, unclipped = clip_update(big, reference, 1.0)
    assert not unclipped and update_norm(clipped, reference) == pytest.approx(1.0)
    assert torch.allclose(clipped["w"], torch.tensor([[0.6, 0.0], [0.0, 0.8]]))
    assert torch.equal(clipped["steps"], torch.tensor(5))  # integer tensors are not averaged nor clipped
    small = {"w": torch.full((2, 2), 0.1), "b": torch.ones(2), "steps": torch.tensor(1)}
    kept, unclipped = clip_update(small, reference, 1.0)
    assert unclipped and torch.equal(kept["w"], small["w"])
    control, _ = clip_update({"w": torch.zeros(2, 2), "c": torch.tensor([3.0, 4.0])}, reference, 1.0)  # no global "c"
    assert torch.allclose(control["c"], torch.tensor([0.6, 0.8]))


def test_one_site_moves_the_noisy_average_by_at_most_twice_the_clip_norm_over_the_sites():
    reference = {"w": torch.zeros(50)}
    sites = [{"w": torch.randn(50, generator=torch.Generator().manual_seed(i)) * 3} for i in range(3)]
    other = [sites[0], sites[1], {"w": torch.full((50,), 1e6)}]  # site 3 replaced by an outlier
    options = CentralDPOptions(noise_multiplier=0.5, clip_norm=1.0)

    def average(updates):
        noisy = CentralDP(options, seed=7, sample_rate=1.0, sites=3).privatize(1, reference, updates)
        return sum(update["w"] for update in noisy) / 3

    shift = (average(sites) - average(other)).norm()
    assert 0 < shift <= 2 * 1.0 / 3 + 1e-5  # the same seeded noise in both: the difference is the clipped share


def test_central_noise_is_seeded_reproducible_and_of_the_configured_size():
    reference = {"w": torch.zeros(200_000)}
    updates = [dict(reference) for _ in range(4)]  # no update: the result is the noise alone
    options = CentralDPOptions(noise_multiplier=0.8, clip_norm=2.0)
    noisy = CentralDP(options, seed=1, sample_rate=1.0, sites=4).privatize(3, reference, updates)
    again = CentralDP(options, seed=1, sample_rate=1.0, sites=4).privatize(3, reference, updates)
    other_round = CentralDP(options, seed=1, sample_rate=1.0, sites=4).privatize(4, reference, updates)
    assert torch.equal(noisy[0]["w"], again[0]["w"]) and torch.equal(noisy[0]["w"], noisy[3]["w"])
    assert not torch.equal(noisy[0]["w"], other_round[0]["w"])
    assert float(noisy[0]["w"].std()) == pytest.approx(0.8 * 2.0 / 4, rel=0.01)


def test_adaptive_clipping_follows_andrew_et_al_and_flowers_noise_split():
    options = CentralDPOptions(noise_multiplier=1e-4, clip_norm=1.0, adaptive=True, clipped_count_stddev=1e-3,
                               target_quantile=0.5, clip_learning_rate=0.2)
    central = CentralDP(options, seed=0, sample_rate=0.5, sites=4)
    assert central.update_noise_multiplier == pytest.approx((1e-4 ** -2 - (2 * 1e-3) ** -2) ** -0.5)
    reference = {"w": torch.zeros(3)}
    updates = [{"w": torch.tensor([n, 0.0, 0.0])} for n in (0.5, 0.9, 2.0, 3.0)]  # 2 of 4 within the norm 1
    central.privatize(1, reference, updates)
    assert central.clip_norm == pytest.approx(1.0 * math.exp(-0.2 * (2 / 4 - 0.5)), abs=1e-3)
    central.privatize(2, reference, [{"w": torch.tensor([0.1, 0.0, 0.0])}] * 4)  # all within: the norm shrinks
    assert central.clip_norm == pytest.approx(math.exp(-0.2 * 0.5), abs=1e-3)
    report = central.report()
    assert report["clip_norms"] == pytest.approx([1.0, 1.0], abs=1e-3) and report["unclipped"] == [2, 4]
    assert report["epsilon"] == pytest.approx(epsilon([(1e-4, 0.5, 2)], delta=1e-5))
    resumed = CentralDP(options, seed=0, sample_rate=0.5, sites=4)
    resumed.restore(json.loads(json.dumps(report)))
    assert resumed.clip_norm == central.clip_norm and resumed.report() == report


# -- options ---------------------------------------------------------------------------------


@pytest.fixture
def raw(tmp_path: Path) -> dict:
    import yaml

    return yaml.safe_load(tiny_config(tmp_path, "fedavg", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}}).read_text())


def error_of(raw: dict, train: dict | None = None, strategy: dict | None = None, model: dict | None = None) -> str:
    if train is not None:
        raw["common"]["train"].update(train)
    if strategy is not None:
        raw["common"]["strategy"] = strategy
    if model is not None:
        raw["common"]["model"]["kwargs"].update(model)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, name="t", source=Path("t.yaml"))
    return str(info.value)


@pytest.mark.parametrize("dp_sgd, message", [
    ({"target_epsilon": 0}, "common.train.dp_sgd.target_epsilon: must be greater than 0, got 0"),
    ({"target_epsilon": -1.0}, "common.train.dp_sgd.target_epsilon: must be greater than 0"),
    ({"noise_multiplier": 1.0, "delta": 1.0}, "common.train.dp_sgd.delta: must be in (0, 1), got 1.0"),
    ({"noise_multiplier": 1.0, "delta": 0}, "common.train.dp_sgd.delta: must be in (0, 1)"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 0}, "common.train.dp_sgd.max_grad_norm: must be greater than 0"),
    ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "common.train.dp_sgd: give exactly one of noise_multiplier and target_epsilon"),
    ({"noise_multipler": 1.0}, "common.train.dp_sgd.noise_multipler: unknown key; did you mean 'noise_multiplier'?"),
])
def test_bad_dp_sgd_options_name_their_key(raw, dp_sgd, message):
    assert message in error_of(raw, {"dp_sgd": dp_sgd})


def test_dp_sgd_refuses_batch_norm_relay_and_gradient_clipping_naming_the_key(raw):
    dp = {"dp_sgd": {"target_epsilon": 3.0}}
    assert "common.train.dp_sgd: the model has batch normalisation (BatchNorm2d)" in error_of(dict(raw), dp, model={"norm": "batch"})
    assert "set common.model.kwargs.norm to group or instance" in error_of(raw, dp, model={"norm": "batch"})
    raw["common"]["model"]["kwargs"]["norm"] = "group"
    assert "common.train.dp_sgd: strategy RelayStrategy does not support DP-SGD" in error_of(raw, dp, strategy={"name": "relay"})
    raw["common"]["strategy"] = {"name": "fedavg"}
    assert "common.train.gradient_clip_val: must be null with dp_sgd" in error_of(raw, {**dp, "gradient_clip_val": 1.0})


@pytest.mark.parametrize("central_dp, message", [
    ({"noise_multiplier": 0}, "common.strategy.kwargs.central_dp.noise_multiplier: must be greater than 0, got 0"),
    ({"noise_multiplier": 1.0, "clip_norm": -1.0}, "common.strategy.kwargs.central_dp.clip_norm: must be greater than 0"),
    ({"noise_multiplier": 1.0, "delta": 2.0}, "common.strategy.kwargs.central_dp.delta: must be in (0, 1), got 2.0"),
    ({"clip_norm": 1.0}, "common.strategy.kwargs.central_dp.noise_multiplier: required option is missing"),
    ({"noise_multiplier": 1.0, "clipnorm": 1.0}, "common.strategy.kwargs.central_dp.clipnorm: unknown option"),
])
def test_bad_central_dp_options_name_their_key(raw, central_dp, message):
    assert message in error_of(raw, strategy={"name": "fedavg", "kwargs": {"weighting": "equal", "central_dp": central_dp}})


def test_central_dp_needs_equal_weighting(raw):
    message = error_of(raw, strategy={"name": "fedavg", "kwargs": {"central_dp": {"noise_multiplier": 1.0}}})
    assert "common.strategy.kwargs.weighting: central_dp bounds one site's share" in message


# -- end to end ------------------------------------------------------------------------------


def test_a_tiny_dp_sgd_federation_writes_each_sites_epsilon_after_every_round(tmp_path):
    path = tiny_config(
        tmp_path, "fedavg", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}},
        common={"strategy": {"kwargs": {"rounds": 2}}, "train": {"dp_sgd": {"target_epsilon": 3.0, "delta": 1e-3}}},
    )
    config = load_config(path)
    assert config.site_runs[0].train.dp_sgd.stages == 2  # the target is spread over the rounds
    run = ExperimentRun(config, tmp_path / "run")
    summary = run.execute()
    written = json.loads((run.folder.results_dir / "summary.json").read_text())
    assert written["privacy"] == summary["privacy"]
    for site in ("site1", "site2"):
        spent = written["privacy"]["dp_sgd"][site]
        ledger = json.loads((run.folder.results_dir / SITES_DIR / f"{site}.json").read_text())
        history = [(s["noise_multiplier"], s["sample_rate"], s["steps"]) for s in ledger["stages"]]
        assert list(spent["per_stage"]) == [f"round1/{site}", f"round2/{site}"]
        assert spent["per_stage"][f"round1/{site}"] == pytest.approx(epsilon(history[:1], delta=1e-3))
        assert spent["epsilon"] == pytest.approx(epsilon(history, delta=1e-3))
        assert 2.5 < spent["epsilon"] <= 3.0  # the target, spent over the two rounds' planned steps


def test_a_tiny_central_dp_federation_reports_its_accounting(tmp_path):
    path = tiny_config(tmp_path, "fedavg", common={"strategy": {"kwargs": {
        "rounds": 2, "weighting": "equal", "central_dp": {"noise_multiplier": 0.05, "clip_norm": 0.5, "delta": 1e-4}}}})
    run = ExperimentRun(load_config(path), tmp_path / "run")
    summary = run.execute()
    central = summary["privacy"]["central_dp"]
    assert central == json.loads((run.folder.results_dir / CENTRAL_FILE).read_text())
    assert central["rounds"] == 2 and central["clip_norms"] == [0.5, 0.5]
    assert central["epsilon"] == pytest.approx(epsilon([(0.05, 1.0, 2)], delta=1e-4))


# -- replay leak ------------------------------------------------------------------------------


def test_windows_cover_every_position_or_the_fewest_strides_that_fit():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    cut = windows(images, 4)  # stride 1: 3 x 3 windows per image
    assert cut.shape == (18, 16)
    assert torch.equal(cut[0], images[0, 0, :4, :4].flatten()) and torch.equal(cut[-1], images[1, 0, 2:, 2:].flatten())
    large = windows(torch.zeros(1, 1, 100, 100), 10)  # stride 1 would cut 91 x 91 windows
    assert len(large) == 31 * 31  # stride 3: 0, 3, ..., 90 (31 positions) per axis, 961 <= 1024


def test_copied_replays_are_flagged_and_far_ones_are_not(tmp_path):
    generator = torch.Generator().manual_seed(0)
    training = torch.rand(10, 1, 8, 8, generator=generator) * 2 - 1
    held_out = torch.rand(5, 1, 8, 8, generator=generator) * 2 - 1
    copies = training[:4, :, 1:5, 3:7].clone()  # crops of training images at any offset: memorised
    assert torch.allclose(nearest_distances(copies, training), torch.zeros(4), atol=1e-3)
    leak = replay_leak("site1", copies, training, held_out)
    assert leak.closer_than_held_out == 1.0 and leak.replay_median < 1e-3 < leak.held_out_median
    noise = torch.rand(4, 1, 4, 4, generator=generator) * 2 - 1
    fresh = replay_leak("site1", noise, training, held_out)
    assert fresh.closer_than_held_out < 1.0 and fresh.replay_median > 0.1
    by_hand = ((noise[0].flatten() - windows(training, 4)).square().mean(1).sqrt()).min()
    assert fresh.replay[0] == pytest.approx(float(by_hand), rel=1e-4)
    plot_replay_leak(tmp_path / "leak.png", [leak, fresh], title="t")
    assert (tmp_path / "leak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resuming --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_dp_sgd_site_resumes_to_the_uninterrupted_weights_and_epsilon(tmp_path):
    config = tiny_config(
        tmp_path, "local", model={"name": "unet", "kwargs": {"base_channels": 4, "depth": 2, "norm": "group"}},
        common={"train": {"dp_sgd": {"noise_multiplier": 0.5, "delta": 1e-3}}},
        current_tasks={"task_ids": [1], "task_confs": {1: {"train": {"epochs": 30}}}},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(exps: Path) -> list[str]:
        return [sys.executable, str(REPO / "train.py"), "-c", str(config), "-n", "t", "--exps-root", str(exps)]

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, env=env, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "killed" / "local" / "t"
    kill_once_written(command(tmp_path / "killed"), run_dir / "checkpoints/task_1/last.ckpt", cwd=tmp_path, env=env)
    assert not (run_dir / "checkpoints/task_1/final.safetensors").exists(), "the run finished before it could be interrupted"
    resumed = subprocess.run(command(tmp_path / "killed"), capture_output=True, text=True, env=env, cwd=tmp_path)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-3000:]
    expected = load_weights(tmp_path / "whole" / "local" / "t" / "checkpoints/task_1/final.safetensors")
    got = load_weights(run_dir / "checkpoints/task_1/final.safetensors")
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    spent = [json.loads((root / "results/summary.json").read_text())["privacy"] for root in (tmp_path / "whole" / "local" / "t", run_dir)]
    assert spent[0] == spent[1] and spent[0]["dp_sgd"]["site1"]["per_stage"] == {"site1": pytest.approx(epsilon([(0.5, 1.0, 30)], delta=1e-3))}


@pytest.mark.slow
def test_a_relay_run_writes_the_replay_leak_table_and_histogram(tmp_path):
    relay = {"label_generator_channels": 16, "image_generator_channels": 4, "discriminator_channels": 4, "quality_samples": 3}
    config = load_config(tiny_config(tmp_path, "relay", common={"strategy": {"kwargs": relay}, "train": {"epochs": 2}}))
    run = ExperimentRun(config, tmp_path / "run")
    run.execute()
    results = run.folder.results_dir
    with open(results / "replay_leak_site2.csv") as table:
        rows = list(csv.DictReader(table))
    assert [(r["site"], r["kind"]) for r in rows] == [("site1", "replay")] * 3 + [("site1", "held_out")] * 3
    assert all(float(r["nearest_training_distance"]) >= 0 for r in rows)
    summary = json.loads((results / "replay_leak.json").read_text())["site2"]["site1"]
    replay = sorted(float(r["nearest_training_distance"]) for r in rows if r["kind"] == "replay")
    assert summary["replay_median"] == pytest.approx(replay[1], rel=1e-5)
    assert (results / "replay_leak_site2.png").read_bytes()[:4] == b"\x89PNG"
