"""Read a run's raw per-job JSON into one long table (one row per job and metric).

Example:
    >>> from anobench.benchmarks.report.collect import collect_results
    >>> frame = collect_results("runs/quick")  # doctest: +SKIP
    >>> frame.groupby(["generator", "metric"])["value"].mean()  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.runner.jobs import read_result

COLUMNS = [
    "stage", "generator", "category", "seed", "metric", "value",
    "selection", "config_hash", "finished_at", "path",
]  # fmt: skip


def _rows(path: Path, payload: dict) -> list[dict]:
    key = payload.get("key", {})
    cell = payload.get("cell", {})
    base = {
        "stage": key.get("stage", path.parent.name),
        "generator": cell.get("generator", key.get("generator")),
        "category": cell.get("category", key.get("category")),
        "seed": cell.get("seed", key.get("seed")),
        "selection": payload.get("selection"),
        "config_hash": key.get("config_hash"),
        "finished_at": payload.get("finished_at"),
        "path": str(path),
    }
    metrics = payload.get("metrics") or {}
    return [
        {**base, "metric": name, "value": float(value)}
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def collect_results(run_dir: str | Path) -> pd.DataFrame:
    """All metrics of a run; for a key with several results (config changed) the newest wins."""
    run_dir = Path(run_dir)
    raw = run_dir / "raw"
    if not raw.is_dir():
        raise UserError(f"{run_dir}: no raw/ folder with results; run `anobench run` first")
    rows = []
    for path in sorted(raw.rglob("*.json")):
        payload = read_result(path)
        if payload is None:
            print(
                f"{path}: unreadable result (truncated?), left out; rerun the same command to redo that job",
                file=sys.stderr,
            )
            continue
        rows.extend(_rows(path, payload))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        raise UserError(f"{raw}: holds no metric results yet")
    frame = frame.sort_values("finished_at").drop_duplicates(
        ["stage", "generator", "category", "seed", "metric"], keep="last"
    )
    return frame.reset_index(drop=True)
