"""Progress over the whole study: stage k of n (of seed j of m), elapsed and remaining time,
in the log and in the run folder's ``results/progress.json``."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

from experiments import tiny_config
from siteflow.cli import train_main
from siteflow.config import load_config
from siteflow.engine.progress import StudyProgress, format_duration
from siteflow.engine.runner import ExperimentRun
from siteflow.engine.seeds import run_seeds
from siteflow.strategies.federated.sampling import draw_sites

LINE = re.compile(r"\[(?:seed (\d+)/(\d+) )?stage (\d+)/(\d+|\?) (\S+)\] elapsed \w+, (about \w+ left|remaining time estimated after this stage)")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(text: str) -> list[tuple[str | None, str | None, str, str, str]]:
    """(seed index, seeds, k, n, stage) of every progress line in ``text``."""
    return [match.groups()[:5] for match in LINE.finditer(text)]


def test_durations_read_as_seconds_minutes_and_hours():
    assert [format_duration(s) for s in (0, 44.6, 130, 3599, 3900)] == ["0s", "45s", "2m10s", "59m59s", "1h05m"]


def test_positions_and_the_estimate_by_hand():
    clock = Clock()
    progress = StudyProgress(2, clock=clock)
    progress.start_seed(["a", "b", "c"], seed=7, seed_index=1)
    first = progress.stage_started("a")
    assert (first.index, first.planned, first.elapsed_s, first.remaining_s) == (1, 3, 0.0, None)
    assert first.describe() == "[seed 1/2 stage 1/3 a] elapsed 0s, remaining time estimated after this stage"
    clock.now += 10
    second = progress.stage_started("b")
    assert (second.index, second.remaining_s) == (2, 50.0)  # 10 s a stage, 5 stages of 6 left
    clock.now += 2
    inner = progress.stage_started("b/personal")  # not planned: part of stage b
    assert (inner.index, inner.remaining_s) == (2, 60.0)  # 12 s for 1 stage, 5 left
    clock.now += 18
    progress.start_seed(["a", "b", "c"], seed=8, seed_index=2)
    other = progress.stage_started("a")
    assert other.describe() == "[seed 2/2 stage 1/3 a] elapsed 30s, about 30s left"  # 30 s for 3 stages, 3 left
    assert other.as_json() == {
        "state": "training", "stage": "a", "index": 1, "planned": 3, "seed": 8, "seed_index": 2, "seeds": 2,
        "elapsed_s": 30.0, "remaining_s": 30.0,
    }


def test_a_resumed_run_counts_on_from_its_plan_and_estimates_from_what_it_trains():
    clock = Clock()
    progress = StudyProgress(clock=clock)
    progress.start_seed(["s1", "s2", "s3", "s4"])
    assert progress.stage_started("s3").index == 3  # s1, s2 finished before
    clock.now += 40
    position = progress.stage_started("s4")
    assert (position.index, position.remaining_s) == (4, 40.0)
    assert position.describe() == "[stage 4/4 s4] elapsed 40s, about 40s left"


def test_without_a_plan_stages_are_counted_of_unknown():
    progress = StudyProgress(clock=Clock())
    progress.start_seed(None)
    progress.stage_started("x")
    assert progress.stage_started("y").describe() == "[stage 2/? y] elapsed 0s, remaining time estimated after this stage"
    with pytest.raises(ValueError, match="seed_index must be in 1..1, got 2"):
        progress.start_seed(None, seed_index=2)


def test_a_sequential_run_logs_every_stage_of_its_cycles_and_saves_where_it_is(tmp_path):
    config = tiny_config(tmp_path, "sequential", common={"strategy": {"name": "sequential", "kwargs": {"cycles": 2}}})
    assert train_main(["-c", str(config), "-n", "p", "--exps-root", str(tmp_path / "exps")]) == 0
    (run_dir,) = (tmp_path / "exps").glob("*/p")
    (log_file,) = (run_dir / "logs").glob("train_*.log")
    stages = ["cycle1/site1", "cycle1/site2", "cycle2/site1", "cycle2/site2"]
    assert _lines(log_file.read_text()) == [(None, None, str(k), "4", stage) for k, stage in enumerate(stages, 1)]
    assert re.search(r"\[stage 1/4 cycle1/site1\] elapsed \w+, remaining time estimated after this stage", log_file.read_text())
    assert re.search(r"\[stage 4/4 cycle2/site2\] elapsed \w+, about \w+ left", log_file.read_text())
    progress = json.loads((run_dir / "results" / "progress.json").read_text())
    assert progress["position"]["state"] == "finished" and progress["position"]["elapsed_s"] > 0
    assert [row["stage"] for row in progress["stages"]] == stages


def test_a_resumed_run_starts_at_the_stage_it_stopped_at(tmp_path, caplog):
    config = load_config(tiny_config(tmp_path, "local"))
    run_dir = tmp_path / "run"
    ExperimentRun(config, run_dir).execute()
    # the state a run killed after its first stage leaves: site2's stage neither saved nor recorded
    shutil.rmtree(run_dir / "checkpoints" / "task_2")
    path = run_dir / "results" / "progress.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({"stages": saved["stages"][:1]}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="siteflow.engine.runner"):
        ExperimentRun(config, run_dir).execute()
    assert _lines(caplog.text) == [(None, None, "2", "2", "site2")]


@pytest.mark.slow
def test_federated_rounds_count_the_sampled_sites_of_every_round_over_seeds(tmp_path, caplog):
    strategy = {"name": "fedavg", "kwargs": {"rounds": 2, "fraction": 0.5}}
    config = load_config(tiny_config(tmp_path, "fedavg", sites=2, common={"strategy": strategy}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="siteflow.engine.runner"):
        run_seeds(config, tmp_path / "run", [1, 2])
    expected = [
        (str(index), "2", str(r), "2", f"round{r}/{draw_sites(['site1', 'site2'], fraction=0.5, min_sites=None, seed=seed, round_number=r)[0]}")
        for index, seed in ((1, 1), (2, 2))
        for r in (1, 2)
    ]
    assert _lines(caplog.text) == expected


def test_a_run_folder_written_before_the_rename_reads_its_sites_own_weights(tmp_path):
    """progress.json of a run trained before ``site_weights`` became ``own_weight_files``: the
    folder reads back (so the run resumes) with each site's own weights where they were."""
    from siteflow.engine.run_folder import RunFolder

    (tmp_path / "results").mkdir()
    stage = {"stage": "round2", "trained_site": None, "values": {"a": {"dice": 0.5}}, "weights": "checkpoints/round2.safetensors",
             "site_weights": {"a": "checkpoints/sites/a/final.safetensors"}}
    (tmp_path / "results" / "progress.json").write_text(json.dumps({"stages": [stage]}))
    (row,) = RunFolder(tmp_path).results
    assert row.own_weight_files == {"a": "checkpoints/sites/a/final.safetensors"}
    assert (row.stage, row.weights, row.values) == ("round2", "checkpoints/round2.safetensors", {"a": {"dice": 0.5}})
