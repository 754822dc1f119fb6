"""The site worker (siteflow.deploy.flower.worker): a real worker process answers a site's
train and evaluate messages as the ClientApp's own process would, says why when it fails, and
a missing worker is named with the command that starts it; it builds its site once per run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from experiments import tiny_config
from flwr.app import ConfigRecord, Context, MessageType, RecordDict

from siteflow.config import load_config
from siteflow.datasets.pooling import build_dataset
from siteflow.deploy.flower.handlers import answer, deployed_site
from siteflow.deploy.flower.protocol import (
    ARRAYS,
    CONFIG,
    FINGERPRINT,
    METRICS,
    NUM_EXAMPLES,
    ROUND,
    TASK_ID,
    TEST_ROUND,
    TESTED,
    experiment_fingerprint,
)
from siteflow.deploy.flower.weights import from_arrays, to_arrays
from siteflow.deploy.flower.worker import SiteWorkerError, ask
from siteflow.engine.runner import ExperimentRun


@pytest.fixture
def worker():
    """A site worker process on a short socket path; killed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="sfw-", dir="/tmp"))
    path = folder / "site.sock"
    process = subprocess.Popen([sys.executable, "-m", "siteflow.deploy.flower.worker", "--socket", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0] if process.poll() is not None else "slow"
            time.sleep(0.1)
        yield path
    finally:
        process.terminate()  # SIGTERM: the worker removes its socket
        process.wait(timeout=30)
        assert not path.exists()
        folder.rmdir()


@pytest.mark.slow
def test_the_worker_answers_as_the_clientapp_would_and_says_why_it_fails(tmp_path, worker):
    config = tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": {"kwargs": {"rounds": 2}}})
    loaded = load_config(config)
    build_dataset(loaded.sites[0], "test")  # writes the synthetic sites, once
    run = ExperimentRun(loaded, tmp_path / "init")
    weights = run.start(run.site_runs[0], lambda: run.strategy.build_network(run.task)).weights
    content = RecordDict({ARRAYS: to_arrays(weights),
                          CONFIG: ConfigRecord({ROUND: 1, FINGERPRINT: experiment_fingerprint(loaded)})})

    def context(folder: str) -> Context:
        node = {TASK_ID: 2, "exps-root": str(tmp_path / folder)}
        return Context(run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config={"config": str(config), "note": "t"})

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker's process (OMP_NUM_THREADS=1): the same arithmetic
    try:
        here = answer(MessageType.TRAIN, content, context("here"))
    finally:
        torch.set_num_threads(threads)
    there = ask(worker, MessageType.TRAIN, content, context("there"))
    assert dict(there[METRICS]) == dict(here[METRICS]) == {TASK_ID: 2, NUM_EXAMPLES: 4}
    mine, its = from_arrays(here[ARRAYS]), from_arrays(there[ARRAYS])
    assert mine.keys() == its.keys() and all(torch.equal(mine[k], its[k]) for k in mine)
    assert not torch.equal(its["head.weight"], weights["head.weight"])  # it trained

    tested = ask(worker, MessageType.EVALUATE, content, context("there"))
    assert 0.0 <= tested[TESTED]["dice"] <= 1.0

    def round_two(**extra) -> RecordDict:
        config = ConfigRecord({ROUND: 2, FINGERPRINT: experiment_fingerprint(loaded), **extra})
        return RecordDict({ARRAYS: content[ARRAYS], CONFIG: config})

    # one message tests round 1's model (the weights it carries), then trains round 2 as a plain one does
    folded = ask(worker, MessageType.TRAIN, round_two(**{TEST_ROUND: 1}), context("there"))
    plain = ask(worker, MessageType.TRAIN, round_two(), context("plain"))
    assert dict(folded[TESTED]) == dict(tested[TESTED]) and TESTED not in plain
    assert all(torch.equal(a, b) for a, b in zip(from_arrays(folded[ARRAYS]).values(), from_arrays(plain[ARRAYS]).values()))

    wrong = RecordDict({ARRAYS: content[ARRAYS], CONFIG: ConfigRecord({ROUND: 1, FINGERPRINT: "another experiment"})})
    with pytest.raises(SiteWorkerError, match="ValueError: site site2: the server's config differs from this site's"):
        ask(worker, MessageType.TRAIN, wrong, context("there"))
    assert ask(worker, MessageType.EVALUATE, content, context("there"))[TESTED]["dice"] == tested[TESTED]["dice"]  # still serving


def test_a_missing_worker_is_named_with_the_command_that_starts_it(tmp_path):
    context = Context(run_id=1, node_id=1, node_config={TASK_ID: 1}, state=RecordDict(), run_config={})
    with pytest.raises(SiteWorkerError, match=r"no site worker listens on .*nobody.sock .*python -m siteflow.deploy.flower.worker --socket"):
        ask(tmp_path / "nobody.sock", MessageType.TRAIN, RecordDict(), context)


@pytest.mark.slow
def test_a_site_is_built_once_per_run_and_node_and_checks_the_server_at_every_message(tmp_path):
    config = tiny_config(tmp_path, "fedavg", sites=2)
    fingerprint = experiment_fingerprint(load_config(config))

    def context(run_id: int, task_id: int = 2) -> Context:
        node = {TASK_ID: task_id, "exps-root": str(tmp_path / "exps")}
        return Context(run_id=run_id, node_id=task_id, node_config=node, state=RecordDict(), run_config={"config": str(config), "note": "t"})

    site = deployed_site(context(1), server_fingerprint=fingerprint)
    assert deployed_site(context(1), server_fingerprint=fingerprint) is site  # the next message of the run
    with pytest.raises(ValueError, match="site site2: the server's config differs from this site's"):
        deployed_site(context(1), server_fingerprint="another experiment")
    assert deployed_site(context(2), server_fingerprint=fingerprint) is not site  # another run
    assert deployed_site(context(2, task_id=1), server_fingerprint=fingerprint).name == "site1"  # another node

    broken = RecordDict({ARRAYS: to_arrays({}), CONFIG: ConfigRecord({ROUND: 1, FINGERPRINT: fingerprint})})
    built = deployed_site(context(3), server_fingerprint=fingerprint)
    with pytest.raises(RuntimeError, match="Missing key"):
        answer(MessageType.TRAIN, broken, context(3))  # no weights to start from
    assert deployed_site(context(3), server_fingerprint=fingerprint) is not built  # a failed answer lets the site go
