"""Where a study's jobs run: processes on this machine (:class:`LocalEngine`, the default), or
tasks of a Ray cluster (:class:`RayEngine`) for more than one machine.

Every job is the same command, ``python -m siteflow.study.job`` (see :mod:`.job`), started in
the study's working folder, its output appended to the job's log file; an engine only chooses
where it runs and on which device. Locally: one job per GPU (``CUDA_VISIBLE_DEVICES``), or,
without GPUs, N processes with the CPU's cores split between them (``OMP_NUM_THREADS`` and
``torch.set_num_threads``). On Ray: one task per job asking for one GPU (or for its share of
CPU cores); Ray places it on a node that has it free. Ray was chosen over Slurm through
submitit because it runs on any set of machines (workstations, cloud VMs, Kubernetes, and on
Slurm too, where ``ray start`` runs inside the allocation), it can be started and tested on one
machine as a real cluster of several nodes, and Flower's simulation engine is built on it.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from siteflow.study.folder import JOB_RECORD, JobKey
from siteflow.study.progress import StudyTracker
from siteflow.study.spec import StudyError

POLL_S = 0.5
"""How often the local engine looks at its processes."""


@dataclass(frozen=True)
class Job:
    """A job to run: its key, the run's config file, its run folder and its log file."""

    key: JobKey
    config_file: Path
    folder: Path
    log_file: Path

    def arguments(self, *, gpu: bool, threads: int | None, worker: str) -> list[str]:
        """The arguments of ``python -m siteflow.study.job``."""
        arguments = [str(self.config_file), str(self.folder), "--seed", str(self.key.seed), "--worker", worker]
        arguments += ["--gpu"] if gpu else []
        return arguments + ([] if threads is None else ["--threads", str(threads)])

    def succeeded(self) -> bool:
        return (self.folder / JOB_RECORD).is_file()

    def error(self) -> str:
        """The job's error: the last line of its log (a traceback's last line names it)."""
        try:
            lines = [line.strip() for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return (lines[-1][:300] if lines else "no output") + f" (log: {self.log_file})"


class Engine(Protocol):
    workers: int

    def run(self, jobs: Sequence[Job], tracker: StudyTracker, *, cwd: Path) -> None:
        """Run every job, telling ``tracker`` when each starts, finishes or fails."""


def job_environment(threads: int | None, gpu: int | None = None) -> dict[str, str]:
    """This process's environment with a job's CPU threads and, for a GPU job, its device."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


@dataclass(frozen=True)
class Slot:
    """A place for one job on this machine: a GPU (its index) or a share of the CPU cores."""

    gpu: int | None
    threads: int | None


def local_slots(workers: int | None, *, gpus: int, cpus: int) -> list[Slot]:
    """The slots of ``workers`` jobs at a time on a machine with ``gpus`` GPUs and ``cpus``
    cores: one job per GPU (default: every GPU), or, without GPUs, ``workers`` processes
    (default: one per 4 cores, at least one) with the cores split evenly between them.

    Raises:
        StudyError: (key ``workers``) more workers than GPUs, or than cores.
    """
    if gpus:
        workers = workers or gpus
        if workers > gpus:
            raise StudyError("workers", f"{workers} runs at a time, one per GPU, but this machine has {gpus} GPU(s)")
        return [Slot(gpu, None) for gpu in range(workers)]
    workers = workers or max(1, cpus // 4)
    if workers > cpus:
        raise StudyError("workers", f"{workers} runs at a time, but this machine has {cpus} CPU core(s) and no GPU")
    return [Slot(None, max(1, cpus // workers)) for _ in range(workers)]


class LocalEngine:
    """Jobs as processes of this machine, one per slot (see :func:`local_slots`).

    Args:
        workers: runs at a time (None: one per GPU, or one per 4 CPU cores).
        gpus, cpus: the devices (default: those of this machine).
    """

    def __init__(self, workers: int | None = None, *, gpus: int | None = None, cpus: int | None = None) -> None:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        self.slots = local_slots(workers, gpus=gpus, cpus=cpus or os.cpu_count() or 1)
        self.workers = len(self.slots)

    def describe(self) -> str:
        slot = self.slots[0]
        each = "one GPU each" if slot.gpu is not None else f"{slot.threads} CPU thread(s) each"
        return f"{self.workers} local process(es) at a time, {each}"

    def run(self, jobs: Sequence[Job], tracker: StudyTracker, *, cwd: Path) -> None:
        queue = list(jobs)
        free = list(enumerate(self.slots))
        running: dict[subprocess.Popen, tuple[Job, tuple[int, Slot]]] = {}
        try:
            while queue or running:
                while queue and free:
                    job, (index, slot) = queue.pop(0), free.pop(0)
                    job.log_file.parent.mkdir(parents=True, exist_ok=True)
                    with open(job.log_file, "ab") as log:
                        arguments = job.arguments(gpu=slot.gpu is not None, threads=slot.threads, worker=f"{platform.node()}/local{index}")
                        process = subprocess.Popen(
                            [sys.executable, "-m", "siteflow.study.job", *arguments],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                            env=job_environment(slot.threads, slot.gpu),
                        )
                    running[process] = (job, (index, slot))
                    tracker.start(job.key)
                for process in [p for p in running if p.poll() is not None]:
                    job, slot = running.pop(process)
                    free.append(slot)
                    if process.returncode == 0 and job.succeeded():
                        tracker.finish(job.key)
                    else:
                        tracker.fail(job.key, job.error())
                time.sleep(POLL_S)
        finally:  # interrupted: end the processes this engine started (each resumes next time)
            for process in running:
                process.terminate()
            for process in running:
                process.wait()


class RayEngine:
    """Jobs as tasks of a Ray cluster, started the way Ray's users start one: ``ray start
    --head`` on one machine, ``ray start --address=<head>:6379`` on the others, then
    ``siteflow-study STUDY.yaml --engine ray`` on any of them (``--address`` defaults to
    ``auto``, the cluster of this machine). The nodes share the study's folder and the data
    at the same paths (a network file system), and have siteflow installed.

    Args:
        address: the cluster (``auto``: the one this machine belongs to; None: start a Ray
            instance on this machine alone).
        workers: runs at a time (None: one per GPU of the cluster, else one per CPU core).
    """

    def __init__(self, address: str | None = "auto", workers: int | None = None) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 0))
        capacity = self.gpus or cpus
        self.workers = workers or capacity
        if self.workers > capacity:
            what = f"{self.gpus} GPU(s)" if self.gpus else f"{cpus} CPU core(s) and no GPU"
            raise StudyError("workers", f"{self.workers} runs at a time, but the Ray cluster has {what}")
        self.threads = None if self.gpus else max(1, cpus // self.workers)
        self.nodes = len([node for node in ray.nodes() if node.get("Alive")])

    def describe(self) -> str:
        each = "one GPU each" if self.gpus else f"{self.threads} CPU core(s) each"
        return f"{self.workers} Ray task(s) at a time over {self.nodes} node(s), {each}"

    def run(self, jobs: Sequence[Job], tracker: StudyTracker, *, cwd: Path) -> None:
        import ray

        task = ray.remote(_run_on_node).options(num_gpus=1 if self.gpus else 0, num_cpus=0 if self.gpus else self.threads, max_retries=0)
        queue = list(jobs)
        running: dict = {}
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    job = queue.pop(0)
                    running[task.remote(job, bool(self.gpus), self.threads, str(cwd))] = job
                    tracker.start(job.key)
                ready, _ = ray.wait(list(running), num_returns=1)
                for reference in ready:
                    job = running.pop(reference)
                    try:
                        code = ray.get(reference)
                    except ray.exceptions.RayError as error:  # the node or the worker died
                        tracker.fail(job.key, f"Ray: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                        continue
                    if code == 0 and job.succeeded():
                        tracker.finish(job.key)
                    else:
                        tracker.fail(job.key, job.error())
        finally:
            for reference in running:
                ray.cancel(reference)


def _run_on_node(job: Job, gpu: bool, threads: int | None, cwd: str) -> int:
    """A Ray task: run ``job`` in a process of the node (on the GPU Ray gave this task);
    returns its exit code. Cancelled, it ends the process (which resumes next time)."""
    import ray

    worker = f"ray:{ray.get_runtime_context().get_node_id()[:12]}"
    job.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "siteflow.study.job", *job.arguments(gpu=gpu, threads=threads, worker=worker)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=job_environment(threads),
        )
        try:
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
