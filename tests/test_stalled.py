"""A site that does not learn while the others do: the rule, and the run's warning."""

import logging

import pytest

from siteflow.config import load_config
from siteflow.core.site_matrix import StageResult
from siteflow.core.stalled import stalled_sites
from siteflow.engine.runner import ExperimentRun

SITES = ["DRIVE", "STARE", "CHASE_DB1"]
# Issue 30's FedBN run on the real sets, round by round (DRIVE, STARE, CHASE_DB1).
ISSUE_30 = [(0.31, 0.28, 0.12), (0.45, 0.40, 0.02), (0.58, 0.50, 0.11), (0.66, 0.60, 0.18), (0.71, 0.64, 0.09)]


def rounds(values, first=1):
    return [StageResult(f"round{first + i}", None, {s: {"dice": v} for s, v in zip(SITES, row)}) for i, row in enumerate(values)]


def test_a_flat_site_is_stalled_from_the_third_round_while_the_others_rise():
    assert stalled_sites(rounds(ISSUE_30[:2]), SITES, "dice") == {}  # too early to tell
    found = stalled_sites(rounds(ISSUE_30[:3]), SITES, "dice")
    assert list(found) == ["CHASE_DB1"]
    rise, others = found["CHASE_DB1"]
    assert rise == pytest.approx(-0.01) and others == pytest.approx((0.27 + 0.22) / 2)
    # Round 4: CHASE_DB1 rose by 0.06, under a third of the others' 0.335: still stalled.
    assert list(stalled_sites(rounds(ISSUE_30[:4]), SITES, "dice")) == ["CHASE_DB1"]


def test_no_site_is_stalled_when_all_learn_or_none_does():
    learning = [(0.3, 0.3, 0.2), (0.5, 0.45, 0.3), (0.6, 0.55, 0.38)]  # CHASE_DB1 slower, by 0.18 against 0.275
    assert stalled_sites(rounds(learning), SITES, "dice") == {}
    converged = [(0.8, 0.78, 0.7), (0.81, 0.79, 0.7), (0.81, 0.8, 0.7)]  # nobody rises: nothing to compare with
    assert stalled_sites(rounds(converged), SITES, "dice") == {}


def test_rows_of_sites_trained_in_turn_are_not_rounds():
    # Sequential training: a site not yet trained is flat by design.
    trained = [StageResult(site, site, row.values) for site, row in zip(SITES, rounds(ISSUE_30[:3]))]
    assert stalled_sites(trained, SITES, "dice") == {}


def test_the_run_warns_once_per_stalled_site(tmp_path, caplog):
    runner = ExperimentRun(load_config("demo/fedbn"), tmp_path / "run")
    names = [site.task_name for site in runner.config.sites]
    caplog.set_level(logging.WARNING, logger="siteflow")
    for number, row in enumerate(ISSUE_30, start=1):
        runner.record(f"round{number}", {s: {"dice": v, "dice_sample": v} for s, v in zip(names, row)}, trained_site=None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"after round3, site {names[2]}'s dice rose by -0.010 since the first test while the other sites' rose by +0.245 on "
        "average: it is not learning (FedBN: see norm_statistics in the troubleshooting guide)"
    ]
