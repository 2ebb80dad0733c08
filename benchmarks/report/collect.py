"""Read a run's raw per-job JSON into one long table (one row per job and metric).

A run that trains more than one segmenter gets one row per (generator, segmenter): the
``generator`` column then reads ``<generator> [<segmenter>]`` for downstream results, so every table,
figure and the gate keep them apart; with one segmenter the labels are the plain generator names.
Likewise a ``downstream.normal_fractions`` sweep labels its rows ``<generator> @normal=<fraction>``;
the plain name stays in ``generator_name`` (the ratio figure's lines).

Example:
    >>> from anobench.benchmarks.report.collect import collect_results
    >>> frame = collect_results("runs/quick")  # doctest: +SKIP
    >>> frame.groupby(["generator", "metric"])["value"].mean()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from anobench.benchmarks.errors import UserError

COLUMNS = [
    "stage", "generator", "category", "seed", "metric", "value",
    "selection", "segmenter", "normal_fraction", "generated_fraction", "generator_name",
    "config_hash", "finished_at", "path",
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
        "segmenter": (payload.get("segmenter") or {}).get("name"),
        "normal_fraction": (payload.get("recipe") or {}).get("normal_fraction"),
        "generated_fraction": (payload.get("recipe") or {}).get("generated_fraction"),
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
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(
                f"{path}: not valid JSON; delete it and rerun the same command to redo that job"
            ) from None
        rows.extend(_rows(path, payload))
    for row in rows:
        row["generator_name"] = row["generator"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        raise UserError(f"{raw}: holds no metric results yet")
    frame = frame.sort_values("finished_at").drop_duplicates(
        ["stage", "generator", "segmenter", "normal_fraction", "category", "seed", "metric"], keep="last"
    )
    return label_rows(frame).reset_index(drop=True)


def label_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Row labels in ``generator``: the segmenter and the normal fraction where a run varies them."""
    frame = frame.copy()
    if frame["segmenter"].dropna().nunique() > 1:
        has = frame["segmenter"].notna()
        frame.loc[has, "generator"] = frame.loc[has, "generator"] + " [" + frame.loc[has, "segmenter"] + "]"
    if frame["normal_fraction"].dropna().nunique() > 1:
        has = frame["normal_fraction"].notna()
        suffix = frame.loc[has, "normal_fraction"].map(lambda f: f" @normal={f:g}")
        frame.loc[has, "generator"] = frame.loc[has, "generator"] + suffix
    return frame
