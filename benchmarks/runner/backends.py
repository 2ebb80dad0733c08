"""Backends that execute a grid of jobs: ``serial`` (in process, the default) and ``dask``.

The dask backend starts a ``LocalCluster`` (one worker per GPU, or per CPU slot without GPUs)
unless a scheduler address is given (``tcp://host:8786``: any Dask cluster, including one
started by dask-jobqueue on SLURM/PBS). Dependencies are expressed per job, not as global
barriers: a downstream job starts as soon as its own generation job is done.

Example:
    >>> from anobench.benchmarks.runner.backends import SerialBackend, run_grid
    >>> summary = run_grid(jobs, SerialBackend())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from anobench.benchmarks.cpus import usable_cpus
from anobench.benchmarks.runner.jobs import Job, JobKey, JobOutcome, execute
from anobench.benchmarks.runner.plan import critical_paths, load_costs, longest_chain_first

OutcomeCallback = Callable[[JobOutcome], None]
OK_STATUSES = ("done", "skipped")


@dataclass
class RunSummary:
    """Outcomes of every job of a run."""

    outcomes: list[JobOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of jobs with ``status``."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[JobOutcome]:
        """Failed and blocked jobs."""
        return [o for o in self.outcomes if o.status not in OK_STATUSES]


def _blocked(job: Job, finished: dict[JobKey, JobOutcome]) -> JobOutcome | None:
    for dep in job.depends_on:
        outcome = finished.get(dep)
        if outcome is None or outcome.status not in OK_STATUSES:
            return JobOutcome(job.key, "blocked", error=f"dependency {dep.label()} did not complete")
    return None


class SerialBackend:
    """Runs jobs one after another in this process (with inner progress bars unless disabled)."""

    name = "serial"
    slots = 1

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def run(self, jobs: list[Job], on_outcome: OutcomeCallback) -> None:
        """Execute ``jobs`` in order; a job whose dependency failed is reported as blocked."""
        finished: dict[JobKey, JobOutcome] = {}
        for job in jobs:
            outcome = _blocked(job, finished) or execute(job, progress=self.progress)
            finished[job.key] = outcome
            on_outcome(outcome)


def _execute_after(job: Job, *dependencies: JobOutcome) -> JobOutcome:
    """Dask task: run ``job`` once its dependencies' outcomes are known."""
    bad = [d for d in dependencies if d.status not in OK_STATUSES]
    if bad:
        return JobOutcome(job.key, "blocked", error=f"dependency {bad[0].key.label()} did not complete")
    _pin_gpu()
    return execute(job, progress=False)


def _pin_gpu() -> None:
    """On a multi-GPU machine, give each Dask worker its own GPU (by worker index)."""
    try:
        import torch
        from distributed import get_worker

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            name = get_worker().name
            if isinstance(name, int):
                torch.cuda.set_device(name % torch.cuda.device_count())
    except (ImportError, ValueError):
        return


def default_worker_count() -> int:
    """One worker per GPU, or per usable CPU when there is no GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:
        pass
    return usable_cpus()


def local_worker_settings(threads: int) -> dict[str, object]:
    """Dask settings for the LocalCluster's worker processes, in place of two of Dask's defaults.

    * The environment: torch threads per worker, and *not* Dask's ``MALLOC_TRIM_THRESHOLD_=65536``.
      That setting makes glibc hand freed memory back at once, so every large tensor is page-faulted
      anew: measured on 2 cores, two single-threaded workers took 25-30 s for 80 quick-size segmenter
      steps against 12-14 s in two plain processes, 15 s without it.
    * The statistical profiler (a thread sampling each task's stack every 10 ms) is off: 10 % of
      those 30 s.
    """
    limits = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {"distributed.nanny.pre-spawn-environ": limits, "distributed.worker.profile.enabled": False}


@contextmanager
def spawn_settings(config: dict[str, object]) -> Iterator[None]:
    """Dask ``config`` for the LocalCluster started inside; this process's environment restored after.

    Dask's nanny writes its ``pre-spawn-environ`` into the parent's ``os.environ`` before spawning a
    worker and keeps a value already there, so a ``MALLOC_TRIM_THRESHOLD_`` left by an earlier
    cluster (or the shell) would reach the workers: it is dropped first.
    """
    import dask

    saved = dict(os.environ)
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set(config):
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class DaskBackend:
    """Runs jobs on a Dask cluster: a LocalCluster by default, or an existing scheduler."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, n_workers: int | None = None) -> None:
        self.scheduler = scheduler
        self.n_workers = n_workers

    @property
    def slots(self) -> int | None:
        """Jobs at a time: the LocalCluster's workers (None for an external scheduler: unknown here)."""
        return None if self.scheduler else self.n_workers or default_worker_count()

    def run(self, jobs: list[Job], on_outcome: OutcomeCallback) -> None:
        """Submit every job with its dependencies as futures, the longest remaining chain first.

        Submission order and priorities come from the stored per-stage costs
        (:func:`~anobench.benchmarks.runner.plan.critical_paths`); outcomes are reported as jobs
        complete.
        """
        from distributed import Client, LocalCluster, as_completed

        paths = critical_paths(jobs, load_costs())
        cluster = None
        if self.scheduler:
            client = Client(self.scheduler)
        else:
            n = self.slots
            with spawn_settings(local_worker_settings(max(1, usable_cpus() // n))):
                cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.WARNING,
                )  # fmt: skip
            client = Client(cluster)
        try:
            futures = {}
            for job in longest_chain_first(jobs, paths):
                deps = [futures[d] for d in job.depends_on]
                futures[job.key] = client.submit(
                    _execute_after, job, *deps, key=f"job-{job.key.name}-{job.key.stage}",
                    priority=round(paths[job.key] * 1000),
                )  # fmt: skip
            for future in as_completed(list(futures.values())):
                on_outcome(future.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def make_backend(
    name: str, scheduler: str | None = None, n_workers: int | None = None, progress: bool = True
):
    """Backend by name: ``serial`` or ``dask`` (``n_workers``, when given, must be at least 1)."""
    from anobench.benchmarks.errors import UserError

    if n_workers is not None and n_workers < 1:
        raise UserError(
            f"--workers / runner.n_workers {n_workers}: must be at least 1 (or unset: one per slot)"
        )
    if name == "serial":
        return SerialBackend(progress)
    if name == "dask":
        return DaskBackend(scheduler, n_workers)
    raise UserError(f"unknown backend {name!r}; choose serial or dask")


def _summary_line(outcome: JobOutcome) -> str:
    key = outcome.key
    if outcome.status == "done":
        metrics = (outcome.result or {}).get("metrics") or {}
        shown = " ".join(f"{k}={v:.3f}" for k, v in list(metrics.items())[:4] if isinstance(v, float))
        return f"done    {key.label()} in {outcome.seconds:.1f}s {shown}".rstrip()
    return f"{outcome.status:7s} {key.label()}: {outcome.error}"


def run_grid(jobs: Iterable[Job], backend, progress: bool = True) -> RunSummary:
    """Run ``jobs`` on ``backend`` with a progress bar (with ETA) and a one-line summary per job."""
    jobs = list(jobs)
    summary = RunSummary()
    t0 = time.perf_counter()
    already = sum(job.done() for job in jobs)
    bar = tqdm(total=len(jobs), desc="grid", unit="job", disable=not progress, dynamic_ncols=True)

    def on_outcome(outcome: JobOutcome) -> None:
        summary.outcomes.append(outcome)
        bar.update()
        if outcome.status != "skipped":
            (bar.write if progress else print)(_summary_line(outcome))

    if already:
        (bar.write if progress else print)(f"resuming: {already} of {len(jobs)} jobs already have results")
    backend.run(jobs, on_outcome)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
