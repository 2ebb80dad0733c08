"""Where a run's time went: seconds per stage and generator, and the run's wall clock.

    python -m anobench.benchmarks.perf.run_times runs/quick [--run-config HASH] [--json]
    python -m anobench.benchmarks.perf.run_times runs/quick --write-costs benchmarks/perf/costs.json

Reads the job results of one run configuration (the last by default, as ``report`` and ``check``
do): each records the seconds its job took. The wall clock is from the run's start (its record in
``runs.jsonl``) to the last job's finish. ``--write-costs`` turns the run into the stored costs
that ``anobench run --plan`` reads: the mean seconds per job of each costed stage (entries the run
has no job of are kept, scaled by the probes), and the plan's speed probe timed now (median of five
processes), so run it on the machine, idle, that made the run, right after a cold run (empty cache)
of the preset whose cost it should predict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.io import write_json
from anobench.benchmarks.report.collect import select_run
from anobench.benchmarks.runner.jobs import JobKey, read_result
from anobench.benchmarks.runner.plan import COSTS_FILE, cost_entry, load_costs


def job_times(
    run_dir: Path, run_config: str | None = None
) -> tuple[list[tuple[JobKey, float]], float | None]:
    """(key, seconds) of every job result of the run, and the run's wall seconds (None: no record)."""
    selection = select_run(run_dir, run_config)
    times, finished = [], []
    for path in selection.paths:
        payload = read_result(path)
        if payload is None or "timings" not in payload:
            continue
        times.append((JobKey(**payload["key"]), float(payload["timings"]["seconds"])))
        finished.append(datetime.fromisoformat(payload["finished_at"]))
    wall = None
    if selection.record is not None and finished:
        wall = (max(finished) - datetime.fromisoformat(selection.record["started_at"])).total_seconds()
    return times, wall


def time_rows(times: list[tuple[JobKey, float]]) -> list[dict[str, Any]]:
    """One row per (stage, generator): jobs, total, mean and max seconds; biggest total first."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for key, seconds in times:
        groups[key.stage, key.generator].append(seconds)
    rows = [
        {"stage": stage, "generator": generator, "jobs": len(v), "total_s": sum(v),
         "mean_s": statistics.fmean(v), "max_s": max(v)}
        for (stage, generator), v in groups.items()
    ]  # fmt: skip
    return sorted(rows, key=lambda r: -r["total_s"])


def stage_means(times: list[tuple[JobKey, float]], stages: dict[str, Any]) -> dict[str, float]:
    """Mean seconds per job of each ``costs.json`` stage entry the run has jobs of."""
    groups: dict[str, list[float]] = defaultdict(list)
    for key, seconds in times:
        groups[cost_entry(key, stages)].append(seconds)
    return {name: statistics.fmean(v) for name, v in groups.items()}


def probe_median(processes: int = 5) -> float:
    """The median of :func:`~anobench.benchmarks.runner.plan.probe_seconds` over fresh processes.

    The probe varies more between processes than within one (10 % on a 2-core VM), so the stored
    value is taken over several.
    """
    code = "from anobench.benchmarks.runner.plan import probe_seconds; print(probe_seconds())"
    runs = [
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        for _ in range(processes)
    ]
    return statistics.median(float(r.stdout.strip().splitlines()[-1]) for r in runs)


def costs_from_run(
    costs: dict[str, Any], times: list[tuple[JobKey, float]], probe: float, source: str, cpus: int
) -> dict[str, Any]:
    """``costs`` with each stage entry's seconds replaced by the run's mean, and the probe's time.

    An entry the run has no job of keeps its measurement, brought to this machine by the two probes
    (new probe / stored probe) when ``costs`` has one.
    """
    stages = {name: dict(entry) for name, entry in costs["stages"].items()}
    means = stage_means(times, stages)
    old_probe = costs.get("probe", {}).get("seconds")
    for name, entry in stages.items():
        if name not in means and old_probe:
            entry["seconds"] = round(float(entry["seconds"]) * probe / float(old_probe), 2)
    for name, seconds in means.items():
        stages.setdefault(name, {})["seconds"] = round(seconds, 2)
    return {
        **costs,
        "source": source,
        "cpu_cores": cpus,
        "probe": {"seconds": round(probe, 3)},
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    from anobench.benchmarks.cpus import usable_cpus
    from anobench.benchmarks.tables import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--run-config", help="a run configuration of the folder (default: its last)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--write-costs", type=Path, metavar="FILE", help=f"write the stored costs (e.g. {COSTS_FILE})"
    )
    parser.add_argument("--source", default="", help="with --write-costs: how the run was made, recorded")
    args = parser.parse_args(argv)

    try:
        times, wall = job_times(args.run_dir, args.run_config)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = time_rows(times)
    total = sum(seconds for _, seconds in times)
    wall_text = f"{wall:.0f} s" if wall is not None else "unknown (no run record)"
    if args.json:
        print(json.dumps({"rows": rows, "job_seconds": total, "wall_seconds": wall}, indent=2))
    else:
        print(format_table(rows, ["stage", "generator", "jobs", "total_s", "mean_s", "max_s"], digits=1))
        stages: dict[str, float] = defaultdict(float)
        for row in rows:
            stages[row["stage"]] += row["total_s"]
        print("per stage: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items()))
        print(f"{len(times)} jobs, {total:.0f} s of jobs; wall clock {wall_text}")
    if args.write_costs:
        source = args.source or f"{args.run_dir}: {len(times)} jobs, {total:.0f} s of jobs, wall {wall_text}"
        written = costs_from_run(load_costs(args.write_costs), times, probe_median(), source, usable_cpus())
        write_json(args.write_costs, written)
        print(f"wrote {args.write_costs} (speed probe here: {written['probe']['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
