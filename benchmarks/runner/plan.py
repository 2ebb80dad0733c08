"""What a run will cost, before it runs: jobs per stage, estimated CPU time and peak memory.

The estimate reads ``benchmarks/perf/costs.json``: measured seconds per job for each stage (the
``generate`` stage per generator where one dominates, e.g. ``generate:dualanodiff``, the
``downstream`` stage per segmenter other than ``draem-unet``, e.g. ``downstream:smp-unet``), at the
settings named under ``reference``; a run with other settings scales the seconds by
``(value / reference) ** exponent`` for each listed field (e.g. the segmenter's image size
squared). Peak memory is the recorded value where one was measured, at the reference settings
(not scaled). GPU hours are printed only
when the file records a device measurement.

Example:
    >>> from anobench.benchmarks.runner.plan import load_costs
    >>> load_costs()["cpu_cores"]
    2
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from pathlib import Path
from typing import Any

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.runner.jobs import Job, JobKey

COSTS_FILE = Path(__file__).resolve().parents[1] / "perf" / "costs.json"


def load_costs(path: Path = COSTS_FILE) -> dict[str, Any]:
    """The stored cost measurements."""
    return json.loads(Path(path).read_text())


def _field(config: RunConfig, dotted: str) -> float:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return float(value)


def job_seconds(entry: dict[str, Any], config: RunConfig) -> float:
    """Seconds per job of one stage entry, scaled from its reference settings to ``config``."""
    seconds = float(entry["seconds"])
    for dotted, exponent in entry.get("exponents", {}).items():
        seconds *= (_field(config, dotted) / float(entry["reference"][dotted])) ** exponent
    return seconds


#: The speed probe: quick-size segmenter training steps (``segmenter`` of quick.yaml), batch 16, on one
#: thread (two threads on a 2-core VM varied by 40 % from one process to the next, one by 10 %).
PROBE = {"image_size": 64, "base_width": 8, "batch": 16, "steps": 10, "repeats": 5}


def single_thread_steps_seconds(steps: int) -> float:
    """Wall seconds of ``steps`` of :data:`PROBE`'s segmenter training steps on one torch thread."""
    import torch

    from anobench.benchmarks.perf.downstream_speed import segmenter_throughput

    size, width, batch = PROBE["image_size"], PROBE["base_width"], PROBE["batch"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return steps * batch / segmenter_throughput(size, width, batch, steps, torch.device("cpu"))[0]
    finally:
        torch.set_num_threads(threads)


def probe_seconds() -> float:
    """Wall seconds of :data:`PROBE`'s training steps on this machine (min over its repeats).

    ``costs.json`` records the same probe on the machine its seconds were measured on, so
    :func:`probed_costs` can scale them to this one (a few seconds).
    """
    return min(single_thread_steps_seconds(PROBE["steps"]) for _ in range(PROBE["repeats"]))


def probed_costs(costs: dict[str, Any], seconds_here: float) -> dict[str, Any]:
    """``costs`` with every stage's seconds scaled by this machine's probe time over the stored one's."""
    factor = seconds_here / float(costs["probe"]["seconds"])
    stages = {
        name: {**entry, "seconds": float(entry["seconds"]) * factor}
        for name, entry in costs["stages"].items()
    }
    return {**costs, "stages": stages, "probed": {"here": seconds_here, "factor": factor}}


def cost_entry(key: JobKey, stages: dict[str, Any]) -> str:
    """The ``costs.json`` stage entry of a job: its generator's or segmenter's own, else its stage's."""
    specific = [f"{key.stage}:{key.generator}", f"{key.stage}:{key.segmenter}"]
    return next((name for name in specific if name in stages), key.stage)


def estimated_seconds(jobs: list[Job], costs: dict[str, Any]) -> dict[JobKey, float | None]:
    """Each job's estimated seconds at its own settings (None: no measurement for its stage)."""
    stages = costs["stages"]
    out: dict[JobKey, float | None] = {}
    for job in jobs:
        entry = stages.get(cost_entry(job.key, stages))
        out[job.key] = job_seconds(entry, job.config) if entry else None
    return out


def _dependency_graph(jobs: list[Job]) -> tuple[dict[JobKey, set[JobKey]], dict[JobKey, list[JobKey]]]:
    """Each job's dependencies among ``jobs``, and the jobs that wait for each one."""
    keys = {job.key for job in jobs}
    waiting = {job.key: set(job.depends_on) & keys for job in jobs}
    dependents: dict[JobKey, list[JobKey]] = {key: [] for key in waiting}
    for key, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(key)
    return waiting, dependents


def critical_paths(jobs: list[Job], costs: dict[str, Any]) -> dict[JobKey, float]:
    """Seconds from each job's start to the end of the longest chain of jobs that wait for it.

    The parallel backends start the ready job with the longest such chain first (longest path
    first), so the DualAnoDiff jobs, which train a base and then feed their evaluation jobs, do not
    wait behind minutes of short jobs. Jobs without a measurement count 0 s.
    """
    seconds = estimated_seconds(jobs, costs)
    _, dependents = _dependency_graph(jobs)
    paths: dict[JobKey, float] = {}
    for job in reversed(jobs):  # jobs come in dependency order: a job's dependents after it
        tail = max((paths[d] for d in dependents[job.key]), default=0.0)
        paths[job.key] = (seconds[job.key] or 0.0) + tail
    return paths


def longest_chain_first(jobs: list[Job], paths: dict[JobKey, float]) -> list[Job]:
    """``jobs`` in a dependency order that takes the longest chain (``paths``) first wherever it can.

    A parallel backend submitting in this order hands its idle workers the right jobs even before
    the scheduler has seen the later ones.
    """
    by_key = {job.key: job for job in jobs}
    return [by_key[key] for key, _ in _schedule(jobs, paths, {job.key: 0.0 for job in jobs}, workers=1)]


def wall_seconds(jobs: list[Job], costs: dict[str, Any], workers: int) -> float:
    """Estimated wall-clock seconds of the grid on ``workers`` slots, scheduled longest path first.

    >>> wall_seconds([], load_costs(), workers=2)
    0.0
    """
    seconds = {key: s or 0.0 for key, s in estimated_seconds(jobs, costs).items()}
    return max(
        (end for _, end in _schedule(jobs, critical_paths(jobs, costs), seconds, workers)), default=0.0
    )


def _schedule(
    jobs: list[Job], paths: dict[JobKey, float], seconds: dict[JobKey, float], workers: int
) -> list[tuple[JobKey, float]]:
    """(job, finish time) in start order: each free worker takes the ready job with the longest path."""
    order = {job.key: i for i, job in enumerate(jobs)}
    waiting, dependents = _dependency_graph(jobs)
    ready = [(-paths[k], order[k], k) for k, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    running: list[tuple[float, int, JobKey]] = []  # (finish time, order, job)
    started: list[tuple[JobKey, float]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < workers:
            *_, key = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds[key], order[key], key))
            started.append((key, now + seconds[key]))
        now, _, finished = heapq.heappop(running)
        for child in dependents[finished]:
            waiting[child].discard(finished)
            if not waiting[child]:
                heapq.heappush(ready, (-paths[child], order[child], child))
    return started


def plan_rows(jobs: list[Job], config: RunConfig, costs: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage (split by costed generator or segmenter): jobs, seconds per job, total, peak MB."""
    stages = costs["stages"]
    counts: Counter[str] = Counter(cost_entry(job.key, stages) for job in jobs)
    rows = []
    for name, n in counts.items():
        entry = stages.get(name)
        per_job = job_seconds(entry, config) if entry else None
        rows.append({
            "stage": name,
            "jobs": n,
            "s_per_job": per_job,
            "total_s": per_job * n if per_job is not None else None,
            "peak_mb": entry.get("peak_mb") if entry else None,
        })  # fmt: skip
    return rows


def format_plan(
    jobs: list[Job], config: RunConfig, costs: dict[str, Any] | None = None, workers: int | None = 1
) -> str:
    """The grid and the cost estimate, as printed by ``anobench run --plan``.

    ``workers``: jobs the backend runs at a time (None: unknown, e.g. an external Dask scheduler);
    the wall-clock estimate schedules the jobs as the backend does, longest remaining chain first.
    """
    from anobench.benchmarks.tables import format_table

    costs = load_costs() if costs is None else costs
    rows = plan_rows(jobs, config, costs)
    total = sum(r["total_s"] for r in rows if r["total_s"] is not None)
    unknown = [r["stage"] for r in rows if r["total_s"] is None]
    probed = costs.get("probed")
    where = (
        f"on this machine, serial ({COSTS_FILE.name} x {probed['factor']:.2f}: the speed probe took "
        f"{probed['here']:.2f} s here, {float(costs['probe']['seconds']):.2f} s where it was measured)"
        if probed
        else f"on a {costs['cpu_cores']}-core CPU machine, serial (measurements: {COSTS_FILE.name})"
    )
    lines = [
        format_table(rows, ["stage", "jobs", "s_per_job", "total_s", "peak_mb"], digits=1),
        f"total: {len(jobs)} jobs, about {total:.0f} s = {total / 3600:.2f} hours {where}",
    ]
    if workers is not None and workers > 1:
        wall = wall_seconds(jobs, costs, workers)
        lines.append(
            f"wall clock with {workers} workers (runner.backend {config.runner.backend}): about "
            f"{wall:.0f} s, the longest chain of jobs first"
        )
    if unknown:
        lines.append(f"no measurement for: {', '.join(unknown)} (not in the total)")
    gpu = costs.get("gpu")
    lines.append(
        f"GPU: {gpu}"
        if gpu
        else "GPU hours: no device measurement recorded in costs.json (CPU estimate only)"
    )
    return "\n".join(lines)
