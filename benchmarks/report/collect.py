"""Read a run's raw per-job JSON into one long table (one row per job and metric).

Pair-quality reference values (``reference`` blocks) become rows of their own generator,
:data:`HELD_OUT_ROW`, next to the generators in every table and in the gate.

Only the results of ONE run configuration are read: those of the run folder's last ``anobench run``
(its record in ``runs.jsonl``, see :mod:`anobench.benchmarks.runner.record`) or of a named one, so a
folder reused with other settings or another dataset state never mixes them. A folder without
records (made before they existed) falls back to the newest result per cell.

A run that trains more than one segmenter gets one row per (generator, segmenter): the
``generator`` column then reads ``<generator> [<segmenter>]`` for downstream results, so every table,
figure and the gate keep them apart; with one segmenter the labels are the plain generator names.
Likewise a ``downstream.normal_fractions`` sweep labels its rows ``<generator> @normal=<fraction>``;
the plain name stays in ``generator_name`` (the ratio figure's lines).

Example:
    >>> from anobench.benchmarks.report.collect import collect_results, select_run
    >>> print(select_run("runs/quick").describe())  # doctest: +SKIP
    run config 3f2a9c0d41be (2026-12-02 17:40, 60 jobs); 3 older results ignored
    >>> frame = collect_results("runs/quick")  # doctest: +SKIP
    >>> frame.groupby(["generator", "metric"])["value"].mean()  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.defaults import KEY_REFERENCE
from anobench.benchmarks.runner.jobs import read_result
from anobench.benchmarks.runner.record import RUNS_FILE, read_runs

COLUMNS = [
    "stage", "generator", "category", "seed", "metric", "value",
    "selection", "smoke_size", "segmenter", "normal_fraction", "generated_fraction", "generator_name",
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
        "smoke_size": bool(cell.get("smoke_size")),
        "segmenter": (payload.get("segmenter") or {}).get("name"),
        "normal_fraction": (payload.get("recipe") or {}).get("normal_fraction"),
        "generated_fraction": (payload.get("recipe") or {}).get("generated_fraction"),
        "config_hash": key.get("config_hash"),
        "finished_at": payload.get("finished_at"),
        "path": str(path),
    }
    reference = (payload.get(KEY_REFERENCE) or {}).get("metrics") or {}
    return [
        {**row, "metric": name, "value": float(value)}
        for row, metrics in (
            (base, payload.get("metrics") or {}),
            ({**base, "generator": HELD_OUT_ROW, "smoke_size": False}, reference),  # real images
        )
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


#: The row (generator) of the per-pair quality values of the held-out real anomalies: the ``reference``
#: block every genmetrics job with pair quality writes (the same for every generator of a category).
HELD_OUT_ROW = "real anomalies (held out)"


#: The ``--run-config`` option's help (report and check).
RUN_CONFIG_HELP = (
    "the run configuration to use (a hash or its prefix, as `anobench run` prints it; default: the last run)"
)


@dataclass
class RunSelection:
    """The result files of one run configuration of a run folder."""

    run_dir: Path
    record: dict[str, Any] | None  # the run record; None: a folder without records (all results)
    paths: list[Path]  # its result files that exist
    ignored: int  # result files of other run configurations
    latest: bool  # the folder's last run

    @property
    def generated(self) -> list[Path]:
        """The generated sets of the run that exist (all of them without a record)."""
        if self.record is None:
            return sorted(p for p in (self.run_dir / "generated").glob("*") if p.is_dir())
        return [self.run_dir / rel for rel in self.record["generated"] if (self.run_dir / rel).is_dir()]

    def describe(self) -> str:
        """One line: which run configuration, and how many results were left out."""
        if self.record is None:
            return f"no run record ({RUNS_FILE}): the newest of {len(self.paths)} results per cell"
        when = self.record["started_at"][:16].replace("T", " ")
        jobs = len(self.record["results"])
        ignored = f"{self.ignored} {'older' if self.latest else 'other'} results ignored"
        run = f"run config {self.record['run_config']} ({when}, {jobs} jobs, {len(self.paths)} with results)"
        return f"{run}; {ignored}"


def select_run(run_dir: str | Path, run_config: str | None = None) -> RunSelection:
    """The results of ``run_dir``'s last run, or of its last run whose config starts with ``run_config``."""
    run_dir = Path(run_dir)
    raw = run_dir / "raw"
    if not raw.is_dir():
        raise UserError(f"{run_dir}: no raw/ folder with results; run `anobench run` first")
    every = sorted(raw.rglob("*.json"))
    records = read_runs(run_dir)
    if not records:
        if run_config:
            raise UserError(f"--run-config {run_config}: {run_dir} has no run records ({RUNS_FILE})")
        return RunSelection(run_dir, None, every, 0, True)
    chosen = records[-1]
    if run_config:
        matching = [r for r in records if r["run_config"].startswith(run_config)]
        if len({r["run_config"] for r in matching}) != 1:
            known = ", ".join(dict.fromkeys(r["run_config"] for r in reversed(records)))
            what = "matches no" if not matching else "matches more than one"
            raise UserError(
                f"--run-config {run_config} {what} run config of {run_dir} (newest first: {known})"
            )
        chosen = matching[-1]
    paths = [run_dir / rel for rel in chosen["results"] if (run_dir / rel).is_file()]
    latest = chosen["run_config"] == records[-1]["run_config"]
    return RunSelection(run_dir, chosen, paths, len(set(every) - set(paths)), latest)


def collect_results(run_dir: str | Path, run_config: str | None = None) -> pd.DataFrame:
    """All metrics of one run configuration (:func:`select_run`), one row per job and metric.

    Without run records, for a cell with several results (config changed) the newest wins.
    """
    selection = select_run(run_dir, run_config)
    rows = []
    for path in selection.paths:
        payload = read_result(path)
        if payload is None:
            print(
                f"{path}: unreadable result (truncated?), left out; rerun the same command to redo that job",
                file=sys.stderr,
            )
            continue
        rows.extend(_rows(path, payload))
    for row in rows:
        row["generator_name"] = row["generator"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        raise UserError(f"{selection.run_dir}: the run ({selection.describe()}) has no metric results yet")
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
