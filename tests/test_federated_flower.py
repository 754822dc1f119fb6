"""FedAvg deployed on Flower: a real SuperLink and two SuperNodes on 127.0.0.1, and the
pieces of the apps on their own (a site's disk, the server's directory of sites).

The expected global weights are computed here: each site's round is reproduced in this
process with the same seeds (``FedAvgStrategy.local_update``), and averaged by hand.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from flwr.app import Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from experiments import tiny_config
from flower_local import LocalFederation
from siteflow.core.atomic import load_weights
from siteflow.config import load_config
from siteflow.deploy.flower.exchange import exchange
from siteflow.deploy.flower.protocol import METRICS, TASK_ID, NodeSettings, RunSettings
from siteflow.deploy.flower.site import DeployedSite
from siteflow.deploy.flower.sites import SiteDirectory
from siteflow.engine.runner import ExperimentRun
from siteflow.datasets.pooling import build_dataset
from siteflow.strategies.federated import ROUND_STATE, FederatedSite

APP = Path(__file__).resolve().parent.parent / "flower-app"


@pytest.fixture
def federation(tmp_path):
    """Start a federation with ``federation(node_configs)``; every process is killed at the end."""
    started: list[LocalFederation] = []

    def start(node_configs: list[str]) -> LocalFederation:
        started.append(LocalFederation(tmp_path, node_configs))
        return started[-1]

    yield start
    for local in started:
        local.close()


def hospitals(tmp_path: Path, count: int = 2) -> list[str]:
    """Node configs: hospital i serves task i and keeps its files in its own folder."""
    return [f'task-id={i} exps-root="{tmp_path / f"hospital{i}"}"' for i in range(1, count + 1)]


def run_config(config: Path, server_root: Path) -> str:
    return f"config='{config}' note='t' exps-root='{server_root}' wait-for-sites=120"


def by_hand(config: Path, folder: Path, rounds: int, task_ids: tuple[int, ...] = (1, 2)) -> list[dict[str, torch.Tensor]]:
    """The global weights after each round, the update of every site of ``task_ids``
    reproduced here and the average taken by hand: sum of samples * weights over the sum of samples."""
    runs = [ExperimentRun(load_config(config, task_ids=[i]), folder / f"site{i}") for i in task_ids]
    strategy = runs[0].strategy
    weights = runs[0].start(runs[0].site_runs[0], lambda: strategy.build_network(runs[0].task)).weights
    sites = [FederatedSite(run, run.site_runs[0]) for run in runs]
    history = []
    for round_number in range(1, rounds + 1):
        updates = [strategy.local_update(site, weights, round_number) for site in sites]
        total = sum(update.num_samples for update in updates)
        weights = {
            name: sum(update.num_samples * update.weights[name] for update in updates) / total
            if tensor.is_floating_point() else updates[0].weights[name]  # BatchNorm's batch counters: equal here
            for name, tensor in weights.items()
        }
        history.append(weights)
    return history


def assert_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(actual[name].to(expected[name].dtype), expected[name], rtol=1e-5, atol=1e-6), name


def matrix(results: Path) -> list[dict[str, str]]:
    with open(results / "site_matrix_dice.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_rounds_on_flower_average_the_sites_and_a_killed_server_resumes(tmp_path, federation):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 2}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")
    build_dataset(server.config.sites[0], "test")  # writes the synthetic sites, once
    local = federation(hospitals(tmp_path))
    local.submit(APP, run_config(config, tmp_path / "server"))
    expected = by_hand(config, tmp_path / "by_hand", rounds=2)

    deadline = time.monotonic() + 240
    while server.load_state(ROUND_STATE) is None:  # written atomically once round 1 is aggregated
        assert time.monotonic() < deadline, f"round 1 did not finish\n{local.log_tails()}"
        time.sleep(0.1)
    time.sleep(2)  # the sites test round 1 and train round 2 (a kill while a message is half sent stalls the sites for a minute)
    local.kill_server_app()
    saved, info = server.load_state(ROUND_STATE)
    assert info["round"] == 1
    progress = server.folder.results_dir / "progress.json"
    assert not progress.is_file() or json.loads(progress.read_text())["stages"] == []  # round 1's test went with round 2's messages
    assert_close({k[len("global/"):]: v for k, v in saved.items()}, expected[0])

    result = local.flwr("run", str(APP), "test", "--run-config", run_config(config, tmp_path / "server"), "--stream", timeout=300)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    assert "resuming the federation after round 1" in result.stdout  # round 1's test goes with round 2's messages again
    saved, info = server.load_state(ROUND_STATE)
    assert info["round"] == 2
    assert_close(load_weights(server.folder.checkpoints / "global" / "final.safetensors"), expected[1])

    rows = matrix(server.folder.results_dir)
    assert [row["after_stage"] for row in rows] == ["round1", "round2"]
    assert all(0.0 <= float(row[site]) <= 1.0 for row in rows for site in ("site1", "site2"))
    summary = json.loads((server.folder.results_dir / "summary.json").read_text())
    assert summary["stages"] == ["round1", "round2"] and summary["sites"] == ["site1", "site2"]
    assert summary["dice"]["final_per_site"]["site1"] == pytest.approx(float(rows[1]["site1"]), abs=1e-6)
    stages = json.loads(progress.read_text())["stages"]
    assert stages[-1]["weights"] == "checkpoints/global/final.safetensors"  # what predict_test.py evaluates
    for site in (1, 2):  # each hospital kept its own logs and the model it tested, none of the server's files
        site_dir = tmp_path / f"hospital{site}" / "fedavg" / "t" / f"site{site}"
        assert (site_dir / "logs" / "round2" / f"site{site}").is_dir()
        assert [p.name for p in (site_dir / "checkpoints" / "global").iterdir()] == [f"final_site{site}.safetensors"]
        assert_close(load_weights(site_dir / "checkpoints" / "global" / f"final_site{site}.safetensors"), expected[1])


@pytest.mark.slow
def test_a_failing_site_is_logged_by_name_and_the_round_goes_on(tmp_path, federation):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 1, "min_sites": 1}}})
    server = ExperimentRun(load_config(config), tmp_path / "server" / "fedavg" / "t")
    build_dataset(server.config.sites[1], "train")  # writes the synthetic sites, once
    shutil.rmtree(next((tmp_path / "data").glob("*/Domain2/train/image")))  # site 2's data fails its checks
    local = federation(hospitals(tmp_path))
    result = local.flwr("run", str(APP), "test", "--run-config", run_config(config, tmp_path / "server"), "--stream", timeout=300)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    assert "round 1: site site2 failed (training)" in result.stdout
    (log_file,) = (server.folder.logs).glob("flower_server*.log")
    assert "round 1: site site2 failed (training)" in log_file.read_text()
    assert "round 1: aggregated site1 (4 samples)" in result.stdout

    final = load_weights(server.folder.checkpoints / "global" / "final.safetensors")
    assert_close(final, by_hand(config, tmp_path / "by_hand", rounds=1, task_ids=(1,))[0])  # site 1's update alone
    (row,) = matrix(server.folder.results_dir)
    assert row["after_stage"] == "round1"
    assert not math.isnan(float(row["site1"]))  # site 1 tested the global model
    assert math.isnan(float(row["site2"]))  # site 2 refuses to work on data that fails its checks, test included
    assert "image folder" in result.stdout and "does not exist" in result.stdout  # its reason, by name


@pytest.fixture
def app_logging(monkeypatch):
    """Undo the apps' logging set-up (``log_to``) after the test."""
    for name in ("siteflow", "flwr"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "level", logger.level)


def test_a_site_keeps_its_normalisation_weights_on_its_own_disk(tmp_path, monkeypatch, app_logging):
    kwargs = {"rounds": 3, "keep_local_norm": True, "norm_statistics": "running"}  # the kept layers as they were kept
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": kwargs}})
    settings, node = RunSettings(config=str(config), note="t"), NodeSettings(task_id=2, exps_root=tmp_path / "hospital2")
    started: dict[int, dict[str, torch.Tensor]] = {}

    def fit(stage, start, trainee, **kwargs):  # each round marks the weights with its number
        round_number = int(stage.split("/")[0][len("round"):])
        started[round_number] = start
        return {k: v + round_number if v.is_floating_point() else v for k, v in start.items()}

    def site() -> DeployedSite:  # every message is a new process
        new = DeployedSite(settings, node)
        monkeypatch.setattr(new.site, "fit", fit)
        return new

    first = site()
    local_keys = first.strategy.local_keys(first.run.task)
    assert local_keys
    global_weights = first.run.start(first.site.site_run, lambda: first.strategy.build_network(first.run.task)).weights
    update = first.train(global_weights, 1)
    assert set(update.weights) == set(global_weights) - local_keys, "a normalisation weight left the site"
    local_dir = first.run.site_folder("site2") / "local"
    assert set(load_weights(local_dir / "round1.safetensors")) == local_keys

    site().train(global_weights, 2)  # round 2 starts from the global weights with round 1's own normalisation
    assert all(torch.equal(started[2][k], global_weights[k] + 1) for k in local_keys if global_weights[k].is_floating_point())
    assert all(torch.equal(started[2][k], global_weights[k]) for k in update.weights)
    site().train(global_weights, 3)
    assert sorted(p.name for p in local_dir.iterdir()) == ["round2.safetensors", "round3.safetensors"]
    site().train(global_weights, 3)  # round 3 again (the server stopped before saving it): from round 2's
    name = next(k for k in local_keys if global_weights[k].is_floating_point())
    assert torch.equal(started[3][name], global_weights[name] + 3)  # round 1's + 2

    tested = site()
    monkeypatch.setattr(tested.run, "evaluate", lambda weights, solver, sites: {sites[0]: {"dice": float(weights[name].sum())}})
    assert tested.test(global_weights, 3)["dice"] == pytest.approx(float((global_weights[name] + 6).sum()))
    with pytest.raises(ValueError, match="the server's config differs from this site's"):
        tested.check("another experiment")
    elsewhere = NodeSettings(task_id=1, exps_root=tmp_path / "hospital1")
    with pytest.raises(ValueError, match="site site1: the server's config differs from this site's"):
        DeployedSite(settings, elsewhere, server_fingerprint="another experiment")
    assert not (tmp_path / "hospital1").exists(), "the site wrote files before it checked the server"


class QueryGrid:
    """A stand-in for Flower's ``Grid`` whose nodes answer queries: ``answers`` maps a node id
    to the task id it serves (None: it fails; absent from a pull: it has not answered yet)."""

    def __init__(self, answers: dict[int, int | None], silent: tuple[int, ...] = ()) -> None:
        self.answers, self.silent, self.pulls = answers, silent, 0

    def get_node_ids(self):
        return list(self.answers)

    def push_messages(self, messages):  # as Flower's grid does: a pushed message's id is its object id
        self.sent = {}
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
            self.sent[message.object_id] = message
        return list(self.sent)

    def pull_messages(self, message_ids):
        self.pulls += 1
        replies = []
        for message in (self.sent[message_id] for message_id in message_ids):
            node = message.metadata.dst_node_id
            if node in self.silent:
                continue
            if self.answers[node] is None:
                reply = Message(Error(code=0, reason="no task-id in the node config"), reply_to=message)
            else:
                reply = Message(RecordDict({METRICS: MetricRecord({TASK_ID: self.answers[node]})}), reply_to=message)
            replies.append(reply)
        return replies


@pytest.fixture
def identities(monkeypatch):
    for key in ("_run_id", "_node_id", "_task_id"):  # Flower's messages belong to a task of a run
        monkeypatch.setattr(TaskIdentity, key, 1)


def queries(node_ids: list[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]


def test_an_exchange_returns_once_every_reply_is_in_or_at_its_timeout(identities):
    grid = QueryGrid({1: 1, 2: 2})
    replies = exchange(grid, queries([1, 2]), timeout=60)
    assert sorted(reply.metadata.src_node_id for reply in replies) == [1, 2] and grid.pulls == 1

    grid = QueryGrid({1: 1, 2: 2}, silent=(2,))
    started = time.monotonic()
    replies = exchange(grid, queries([1, 2]), timeout=0.5, poll_interval=0.1)
    assert [reply.metadata.src_node_id for reply in replies] == [1]
    assert 0.5 <= time.monotonic() - started < 5 and 2 <= grid.pulls <= 7  # a pull every 0.1 s until the timeout
    with pytest.raises(ValueError, match="poll_interval must be positive, got 0"):
        exchange(grid, [], timeout=1, poll_interval=0)


def test_the_server_learns_which_node_serves_which_site(tmp_path, identities, caplog):
    answers = {11: 1, 12: 2, 13: 7, 14: None}  # node -> task id it serves (7: not in the study; None: fails)

    directory = SiteDirectory(load_config(tiny_config(tmp_path, "fedavg", sites=3)).site_runs)
    nodes = directory.connected(QueryGrid(answers))
    assert {node: task.task_name for node, task in nodes.items()} == {11: "site1", 12: "site2"}
    assert directory.missing(nodes.values()) == ["site3"]
    assert "node 13 serves task id 7, which this run does not train" in caplog.text
    assert "node 14 did not say which site it serves" in caplog.text
    assert directory.name(12) == "site2" and directory.name(99) == "<node 99>"

    answers.update({15: 2})  # site 2's SuperNode restarted: a new node id
    del answers[12]
    assert {node: task.task_name for node, task in directory.connected(QueryGrid(answers)).items()} == {11: "site1", 15: "site2"}
    assert "site site2: node 15 replaces node 12" in caplog.text
