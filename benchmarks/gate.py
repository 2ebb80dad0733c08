"""The CI regression gate: compare a run's metrics with a committed baseline and tolerances.

Baseline file (``results/baseline/quick.json``)::

    {"preset": "quick",
     "tolerances": {"default": 0.05, "pixel_ap": 0.1},
     "metrics": {"downstream/real-fewshot/nut/image_auroc": 0.93, ...}}

A metric fails when it is worse than its baseline by more than its tolerance, "worse" in the
direction the metric catalogue (:mod:`anobench.benchmarks.metrics.catalogue`) gives it (higher is
better except for ``kid`` and ``fid``); a baseline metric missing from the run fails too. Descriptive
statistics (``mask_area`` ...) have no better direction and are never gated; a metric the
catalogue does not know is a user error. Besides every cell, the gate compares each generator's
mean over categories (category ``Average``, the tables' last row).

Calibrated tolerances. Small CPU trainings are chaotic: the same code and seed give different
numbers on another CPU (other SIMD kernels) or with another torch thread count, because float
sums round differently and ten epochs amplify that. Measured on the ``quick`` preset: one thread
instead of two moved ``nsa/nut`` image AUROC from 0.82 to 0.91. So a baseline is written from
several runs of the same preset made under such perturbations (``anobench check RUN_A RUN_B ...
--write-baseline FILE``): the baseline value is their mean, and each metric's tolerance is
``max(floor, noise_factor * noise)``, where ``noise`` is the larger of the metric's own standard
deviation over the runs and the deviation pooled over every cell of the same stage and metric
(a robust estimate from few runs). The floors are the ``tolerances`` given by name; the pooled
noise is recorded under ``calibration``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.io import write_json
from anobench.benchmarks.metrics.catalogue import metric
from anobench.benchmarks.provenance import git_sha, utc_now
from anobench.benchmarks.report.collect import collect_results

DEFAULT_TOLERANCES = {"default": 0.05}
#: Tolerance = max(floor, NOISE_FACTOR x calibrated noise) unless --noise-factor says otherwise.
NOISE_FACTOR = 3.0
#: The category of a generator's mean over categories (the tables' ``Average`` row).
AVERAGE = "Average"
#: Metric key -> value.
Values = dict[str, float]


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
        """Within tolerance (in the metric's better direction)."""
        if self.value is None:
            return False
        return metric(self.key).worse_by(self.baseline, self.value) <= self.tolerance + 1e-12


def run_metrics(run_dir: str | Path, run_config: str | None = None) -> dict[str, float]:
    """``stage/generator/category/metric`` -> mean over seeds, plus ``stage/generator/Average/metric``.

    The results are those of one run configuration (the last run by default, see
    :func:`~anobench.benchmarks.report.collect.select_run`). The ``Average`` entries (mean over
    categories of the per-category means) exist where a generator has results in more than one category.
    """
    frame = collect_results(run_dir, run_config)
    means = frame.groupby(["stage", "generator", "category", "metric"])["value"].mean()
    out = {"/".join(map(str, k)): float(v) for k, v in means.items()}
    per_generator = means.groupby(level=["stage", "generator", "metric"])
    for (stage, generator, name), values in per_generator:
        if len(values) > 1:
            out[f"{stage}/{generator}/{AVERAGE}/{name}"] = float(values.mean())
    return out


def tolerance_for(tolerances: dict[str, float], key: str) -> float:
    """The tolerance of ``key``: its own entry, else its metric name's, else ``default``."""
    metric = key.rsplit("/", 1)[-1]
    return float(tolerances.get(key, tolerances.get(metric, tolerances["default"])))


def _noise_group(key: str) -> str:
    """Cells pool their noise per stage and metric; ``Average`` rows pool separately."""
    parts = key.split("/")
    stage, category, metric = parts[0], parts[-2], parts[-1]
    return f"{stage}/{metric}" + (f"/{AVERAGE}" if category == AVERAGE else "")


def calibrate(runs: Sequence[Values]) -> tuple[Values, Values, Values]:
    """Baseline means, per-key standard deviations and pooled noise per group from repeated runs.

    Keys missing from some run are kept with the runs that have them; a single run gives zero noise.

    Example:
        >>> key = "downstream/g/nut/image_auroc"
        >>> means, stds, pooled = calibrate([{key: 0.8}, {key: 0.6}])
        >>> round(means[key], 3), round(stds[key], 3), round(pooled["downstream/image_auroc"], 3)
        (0.7, 0.141, 0.141)
    """
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for key, value in run.items():
            if metric(key).gated and value == value:  # NaN: nothing to compare
                values[key].append(value)
    means = {k: sum(v) / len(v) for k, v in values.items()}
    stds = {
        k: math.sqrt(sum((x - means[k]) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        for k, v in values.items()
    }
    variances: dict[str, list[float]] = defaultdict(list)
    for key, std in stds.items():
        if len(values[key]) > 1:
            variances[_noise_group(key)].append(std**2)
    pooled = {g: math.sqrt(sum(v) / len(v)) for g, v in variances.items()}
    return means, stds, pooled


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
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("metrics"), dict)
        or not payload["metrics"]
    ):
        raise UserError(f"{path}: needs a non-empty 'metrics' mapping")
    return payload


def compare(
    run_dir: str | Path, baseline_path: str | Path, run_config: str | None = None
) -> tuple[list[GateRow], list[str]]:
    """One row per gated baseline metric, and the gated run metrics the baseline lacks.

    Descriptive metrics in a baseline are left out; the run metrics the baseline lacks (added after
    the calibration) are not checked until the baseline is rewritten. ``run_config``: as in
    :func:`run_metrics`.
    """
    baseline = load_baseline(baseline_path)
    tolerances = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    values = run_metrics(run_dir, run_config)
    rows = [
        GateRow(key, float(reference), values.get(key), tolerance_for(tolerances, key))
        for key, reference in sorted(baseline["metrics"].items())
        if metric(key).gated
    ]
    unchecked = sorted(k for k in values if k not in baseline["metrics"] and metric(k).gated)
    return rows, unchecked


def check_tolerances(tolerances: dict[str, float], noise_factor: float = NOISE_FACTOR) -> None:
    """Tolerances must be >= 0 and the noise factor > 0 (a negative tolerance fails every metric)."""
    problems = [f"--tolerance {k}={v}: must be >= 0" for k, v in tolerances.items() if not v >= 0]
    if not noise_factor > 0:
        problems.append(f"--noise-factor={noise_factor}: must be > 0")
    if problems:
        raise UserError(*problems)


def calibrated_tolerances(
    runs: Sequence[Values], floors: dict[str, float], noise_factor: float = NOISE_FACTOR
) -> tuple[Values, Values, Values]:
    """Baseline means, each key's tolerance ``max(floor, noise_factor x noise)`` and the pooled noise."""
    means, stds, pooled = calibrate(runs)
    tolerances = {
        key: max(tolerance_for(floors, key), noise_factor * max(std, pooled.get(_noise_group(key), 0.0)))
        for key, std in stds.items()
    }
    return means, tolerances, pooled


def leave_one_out(
    runs: Sequence[Values], floors: dict[str, float], noise_factor: float = NOISE_FACTOR
) -> list[list[str]]:
    """For each run, the gated keys it fails against a baseline calibrated on the other runs.

    A new run (another CPU, thread count or kernel set) is such a held-out run: how many values each
    calibration run fails this way says how brittle per-value tolerances from so few runs are.

    Example:
        >>> runs = [{"downstream/g/nut/image_auroc": v} for v in (0.80, 0.81, 0.79, 0.50)]
        >>> leave_one_out(runs, {"default": 0.05}, noise_factor=3.0)
        [[], [], [], ['downstream/g/nut/image_auroc']]
    """
    failing = []
    for i, held_out in enumerate(runs):
        means, tolerances, _ = calibrated_tolerances(runs[:i] + runs[i + 1 :], floors, noise_factor)
        failing.append([
            key
            for key, mean in sorted(means.items())
            if key in held_out and held_out[key] == held_out[key]  # NaN: nothing to compare
            and not GateRow(key, mean, held_out[key], tolerances[key]).passed
        ])  # fmt: skip
    return failing


def write_baseline(
    run_dirs: str | Path | Sequence[str | Path],
    path: str | Path,
    preset: str,
    tolerances: dict[str, float],
    noise_factor: float = NOISE_FACTOR,
) -> Path:
    """Record the mean of one or more runs as the new baseline (review the diff before committing it).

    ``tolerances`` are floors by metric name (or full key); with several runs each key whose
    ``noise_factor x noise`` exceeds its floor gets that as its own tolerance. With three runs or
    more the file also records :func:`leave_one_out` (``calibration.leave_one_out``: per run, the
    keys it fails against the others' baseline).
    """
    check_tolerances(tolerances, noise_factor)
    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    runs = [run_metrics(d) for d in dirs]
    floors = {**DEFAULT_TOLERANCES, **tolerances}
    means, calibrated, pooled = calibrated_tolerances(runs, floors, noise_factor)
    per_key = {k: round(t, 4) for k, t in calibrated.items() if t > tolerance_for(floors, k)}
    calibration: dict[str, Any] = {
        "runs": [str(d) for d in dirs],
        "noise_factor": noise_factor,
        "pooled_noise": {g: round(v, 6) for g, v in sorted(pooled.items())},
    }
    if len(runs) >= 3:
        failing = leave_one_out(runs, floors, noise_factor)
        calibration["leave_one_out"] = {str(d): keys for d, keys in zip(dirs, failing, strict=True)}
    payload = {
        "preset": preset,
        "created_at": utc_now(),
        "git_sha": git_sha(),
        "calibration": calibration,
        "tolerances": {**floors, **dict(sorted(per_key.items()))},
        "metrics": {k: round(v, 6) for k, v in sorted(means.items())},
    }
    return write_json(path, payload)
