"""The study's progress: jobs done, running, failed (with their error) and the time left, as
one terminal line and as ``progress.json`` in the study's folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from siteflow.core.atomic import write_json
from siteflow.engine.progress import format_duration
from siteflow.study.folder import JobKey


class StudyTracker:
    """Follows the jobs of a study as an engine starts and ends them.

    Args:
        name: the study's name.
        jobs: every job of the study.
        done: the jobs finished before this process started (read back, not run again).
        workers: how many jobs run at a time (for the estimate of the time left).
        path: the JSON file rewritten at every change (atomically).
        stream: where the line goes (rewritten in place on a terminal, one line per change
            otherwise).
        clock: seconds, monotonic (a test passes its own).
    """

    def __init__(
        self,
        name: str,
        jobs: Sequence[JobKey],
        done: Sequence[JobKey],
        *,
        workers: int,
        path: Path,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.jobs = list(jobs)
        self.done_before = [job for job in jobs if job in set(done)]
        self.workers = workers
        self.path = path
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.started_at = clock()
        self.running: dict[JobKey, float] = {}
        self.finished: dict[JobKey, float] = {}
        self.failed: dict[JobKey, str] = {}
        self._width = 0

    @property
    def pending(self) -> list[JobKey]:
        settled = set(self.done_before) | set(self.running) | set(self.finished) | set(self.failed)
        return [job for job in self.jobs if job not in settled]

    def start(self, job: JobKey) -> None:
        self.running[job] = self.clock()
        self._show()

    def finish(self, job: JobKey) -> None:
        self.finished[job] = self.clock() - self.running.pop(job)
        self._show()

    def fail(self, job: JobKey, error: str) -> None:
        self.running.pop(job, None)
        self.failed[job] = error
        self._show()

    def remaining_s(self) -> float | None:
        """The mean time of the jobs finished in this process times the work left (the pending
        jobs and half of each running one) over the workers; None before a job has finished."""
        if not self.finished:
            return None
        mean = sum(self.finished.values()) / len(self.finished)
        return mean * (len(self.pending) + 0.5 * len(self.running)) / max(self.workers, 1)

    def line(self) -> str:
        """``study demo: 7/21 done, 2 running, 1 failed, about 12m30s left``."""
        done = len(self.done_before) + len(self.finished)
        parts = [f"{done}/{len(self.jobs)} done", f"{len(self.running)} running"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        remaining = self.remaining_s()
        if self.pending or self.running:
            parts.append("time left estimated after the first run" if remaining is None else f"about {format_duration(remaining)} left")
        return f"study {self.name}: {', '.join(parts)} ({format_duration(self.clock() - self.started_at)} elapsed)"

    def as_json(self) -> dict:
        remaining = self.remaining_s()
        now = self.clock()
        return {
            "study": self.name,
            "jobs": len(self.jobs),
            "done": len(self.done_before) + len(self.finished),
            "done_before": [_job(job) for job in self.done_before],
            "finished": [{**_job(job), "seconds": round(s, 1)} for job, s in self.finished.items()],
            "running": [{**_job(job), "seconds": round(now - since, 1)} for job, since in self.running.items()],
            "failed": [{**_job(job), "error": error} for job, error in self.failed.items()],
            "pending": [_job(job) for job in self.pending],
            "elapsed_s": round(now - self.started_at, 1),
            "remaining_s": None if remaining is None else round(remaining, 1),
        }

    def close(self) -> None:
        """End the terminal line; name each failed job with its error."""
        write_json(self.path, self.as_json())
        if self.stream.isatty():
            self.stream.write("\n")
        for job, error in self.failed.items():
            self.stream.write(f"failed: {job}: {error}\n")
        self.stream.flush()

    def _show(self) -> None:
        write_json(self.path, self.as_json())
        line = self.line()
        if self.stream.isatty():
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _job(job: JobKey) -> dict:
    return {"run": job.run, "seed": job.seed}
