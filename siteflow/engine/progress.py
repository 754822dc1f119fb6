"""Where a study is: stage k of n (of seed j of m), elapsed time, estimated remaining time.

The strategy plans the stages of a run (:meth:`~siteflow.strategies.base.Strategy.planned_stages`:
the names it will pass to ``fit``, in order); the engine tells a :class:`StudyProgress` when a
stage starts training, and gets back a :class:`Position` to log and save. A stage's number is
its place in the plan, so a resumed run counts on from where it stopped; a stage the plan
does not name (a second training step inside a planned one) keeps the number of the planned
stage before it. The estimate of the remaining time is the average time of the stages this
process trained times the stages left (over every seed still to run): none before the first
stage this process trains has ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence


def format_duration(seconds: float) -> str:
    """``seconds`` as ``45s``, ``2m10s`` or ``1h05m`` (rounded to the second)."""
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class Position:
    """A stage that starts: its number ``index`` of ``planned`` (None when the strategy plans
    no stage count), the seed's number of ``seeds`` in a repeated study, the seconds since the
    study started in this process and the estimated seconds left (None: no estimate yet)."""

    stage: str
    index: int
    planned: int | None
    elapsed_s: float
    remaining_s: float | None
    seed: int | None = None
    seed_index: int = 1
    seeds: int = 1

    def describe(self) -> str:
        """One log line, e.g. ``[seed 2/3 stage 3/9 site2] elapsed 2m10s, about 4m20s left``."""
        seed = f"seed {self.seed_index}/{self.seeds} " if self.seeds > 1 else ""
        planned = "?" if self.planned is None else str(self.planned)
        left = "remaining time estimated after this stage" if self.remaining_s is None else f"about {format_duration(self.remaining_s)} left"
        return f"[{seed}stage {self.index}/{planned} {self.stage}] elapsed {format_duration(self.elapsed_s)}, {left}"

    def as_json(self) -> dict:
        """The position as saved in the run folder's ``results/progress.json``."""
        return {
            "state": "training",
            "stage": self.stage,
            "index": self.index,
            "planned": self.planned,
            "seed": self.seed,
            "seed_index": self.seed_index,
            "seeds": self.seeds,
            "elapsed_s": round(self.elapsed_s, 1),
            "remaining_s": None if self.remaining_s is None else round(self.remaining_s, 1),
        }


class StudyProgress:
    """Counts the stages of a study (over all its seeds) as they start.

    Args:
        seeds: how many seeds the study runs (each a whole run of the same plan).
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(self, seeds: int = 1, *, clock: Callable[[], float] = time.monotonic) -> None:
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {seeds}")
        self.seeds = seeds
        self.clock = clock
        self.started = clock()
        self.plan: list[str] | None = None
        self.seed: int | None = None
        self.seed_index = 1
        self.index = 0
        self._first: tuple[int, float] | None = None  # (study-wide stage number, time) of the first stage trained here

    def elapsed(self) -> float:
        """Seconds since the study started in this process."""
        return self.clock() - self.started

    def start_seed(self, planned: Sequence[str] | None, *, seed: int | None = None, seed_index: int = 1) -> None:
        """A run (of seed ``seed``, the ``seed_index``-th of the study) begins with the stages
        ``planned`` (None: the strategy does not say)."""
        if not 1 <= seed_index <= self.seeds:
            raise ValueError(f"seed_index must be in 1..{self.seeds}, got {seed_index}")
        self.plan = None if planned is None else list(planned)
        self.seed, self.seed_index, self.index = seed, seed_index, 0

    def stage_started(self, stage: str) -> Position:
        """Stage ``stage`` starts training: its position, with the time estimate."""
        now = self.clock()
        if self.plan is None:
            self.index += 1
        elif stage in self.plan:
            self.index = self.plan.index(stage) + 1
        planned = None if self.plan is None else len(self.plan)
        remaining = None
        if planned is not None:
            done = (self.seed_index - 1) * planned + max(self.index - 1, 0)  # study-wide stages before this one
            if self._first is None:
                self._first = (done, now)
            elif done > self._first[0]:
                per_stage = (now - self._first[1]) / (done - self._first[0])
                remaining = per_stage * (self.seeds * planned - done)
        return Position(stage, max(self.index, 1), planned, now - self.started, remaining, self.seed, self.seed_index, self.seeds)
