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

import json
from collections import Counter
from pathlib import Path
from typing import Any

from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.runner.jobs import Job

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


def plan_rows(jobs: list[Job], config: RunConfig, costs: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage (split by costed generator or segmenter): jobs, seconds per job, total, peak MB."""
    stages = costs["stages"]
    counts: Counter[str] = Counter()
    for job in jobs:
        specific = [f"{job.key.stage}:{job.key.generator}", f"{job.key.stage}:{job.key.segmenter}"]
        counts[next((name for name in specific if name in stages), job.key.stage)] += 1
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


def format_plan(jobs: list[Job], config: RunConfig, costs: dict[str, Any] | None = None) -> str:
    """The grid and the cost estimate, as printed by ``anobench run --plan``."""
    from anobench.benchmarks.tables import format_table

    costs = load_costs() if costs is None else costs
    rows = plan_rows(jobs, config, costs)
    total = sum(r["total_s"] for r in rows if r["total_s"] is not None)
    unknown = [r["stage"] for r in rows if r["total_s"] is None]
    lines = [
        format_table(rows, ["stage", "jobs", "s_per_job", "total_s", "peak_mb"], digits=1),
        f"total: {len(jobs)} jobs, about {total:.0f} s = {total / 3600:.2f} hours on a "
        f"{costs['cpu_cores']}-core CPU machine, serial (measurements: {COSTS_FILE.name})",
    ]
    if unknown:
        lines.append(f"no measurement for: {', '.join(unknown)} (not in the total)")
    gpu = costs.get("gpu")
    lines.append(
        f"GPU: {gpu}"
        if gpu
        else "GPU hours: no device measurement recorded in costs.json (CPU estimate only)"
    )
    return "\n".join(lines)
