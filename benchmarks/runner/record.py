"""Run records: which results belong to one run configuration.

A run folder can be reused with other settings or another state of the dataset, and then holds
results of several grids. Each ``anobench run`` appends one line to ``<run>/runs.jsonl``: its run
config (a hash of the grid's job keys, so the same config on the same dataset files is the same
run config), when it started, and the result files and generated sets of its grid. ``report`` and
``check`` use exactly those of one record (the last by default), see
:func:`anobench.benchmarks.report.collect.select_run`.

Example:
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> record = append_run(run, "quick", ["raw/downstream/a.json"], ["generated/a"])
    >>> read_runs(run)[-1]["run_config"] == record["run_config"]
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anobench.benchmarks.provenance import utc_now
from anobench.generation.base import config_hash

RUNS_FILE = "runs.jsonl"


def append_run(run_dir: Path, name: str, results: list[str], generated: list[str]) -> dict[str, Any]:
    """Record a run of ``name`` whose grid has ``results`` and ``generated`` (relative to ``run_dir``)."""
    record = {
        "run_config": config_hash(sorted(results)),
        "name": name,
        "started_at": utc_now(),
        "results": results,
        "generated": generated,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / RUNS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def read_runs(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir``, oldest first (a line cut short by a killed run is skipped)."""
    path = run_dir / RUNS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
