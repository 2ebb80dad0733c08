"""The CI regression gate: compare a run's metrics with a committed baseline and tolerances.

Baseline file (``results/baseline/quick.json``)::

    {"preset": "quick",
     "tolerances": {"default": 0.05, "pixel_ap": 0.1},
     "metrics": {"downstream/real-fewshot/nut/image_auroc": 0.93, ...}}

A metric fails when it is worse than its baseline by more than its tolerance (higher is better,
except for ``kid`` and ``fid``); a baseline metric missing from the run fails too. Descriptive mask
statistics (``mask_area`` ...) have no better direction and are not gated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import UserError
from benchmarks.provenance import git_sha, utc_now
from benchmarks.report.collect import collect_results
from generation.quality import MASK_METRICS

LOWER_IS_BETTER = {"kid", "fid"}
NOT_GATED = set(MASK_METRICS)
DEFAULT_TOLERANCES = {"default": 0.05}


@dataclass
class GateRow:
    """One compared metric."""

    key: str
    baseline: float
    value: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        """Run minus baseline."""
        return None if self.value is None else self.value - self.baseline

    @property
    def passed(self) -> bool:
        """Within tolerance (in the metric's good direction)."""
        if self.value is None:
            return False
        worse_by = self.baseline - self.value
        if self.key.rsplit("/", 1)[-1] in LOWER_IS_BETTER:
            worse_by = -worse_by
        return worse_by <= self.tolerance + 1e-12


def run_metrics(run_dir: str | Path) -> dict[str, float]:
    """``stage/generator/category/metric`` -> mean over seeds."""
    frame = collect_results(run_dir)
    means = frame.groupby(["stage", "generator", "category", "metric"])["value"].mean()
    return {"/".join(map(str, k)): float(v) for k, v in means.items()}


def load_baseline(path: str | Path) -> dict:
    """Read and sanity-check a baseline file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: baseline not found; create one with `anobench check RUN --write-baseline {path}`"
        )
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path}: not valid JSON") from None
    if not isinstance(payload.get("metrics"), dict) or not payload["metrics"]:
        raise UserError(f"{path}: needs a non-empty 'metrics' mapping")
    return payload


def compare(run_dir: str | Path, baseline_path: str | Path) -> list[GateRow]:
    """One row per baseline metric."""
    baseline = load_baseline(baseline_path)
    tolerances = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    values = run_metrics(run_dir)
    rows = []
    for key, reference in sorted(baseline["metrics"].items()):
        metric = key.rsplit("/", 1)[-1]
        tolerance = float(tolerances.get(key, tolerances.get(metric, tolerances["default"])))
        rows.append(GateRow(key, float(reference), values.get(key), tolerance))
    return rows


def write_baseline(run_dir: str | Path, path: str | Path, preset: str, tolerances: dict[str, float]) -> Path:
    """Record a run's metrics as the new baseline (review the diff before committing it)."""
    payload = {
        "preset": preset,
        "created_at": utc_now(),
        "git_sha": git_sha(),
        "tolerances": {**DEFAULT_TOLERANCES, **tolerances},
        "metrics": {
            k: round(v, 6)
            for k, v in sorted(run_metrics(run_dir).items())
            if k.rsplit("/", 1)[-1] not in NOT_GATED and v == v  # NaN: nothing to compare against
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
