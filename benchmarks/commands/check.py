"""``anobench check RUN_DIR --baseline FILE``: the CI regression gate (exit 1 on a regression)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.gate import (
    NOISE_FACTOR,
    GateRow,
    check_tolerances,
    compare,
    write_baseline,
)
from anobench.benchmarks.metrics.catalogue import metric
from anobench.benchmarks.report.collect import RUN_CONFIG_HELP, select_run
from anobench.benchmarks.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check`` sub-command."""
    p = subparsers.add_parser("check", help="compare a run with a baseline; exit 1 when a metric regressed")
    p.add_argument(
        "run_dir", type=Path, nargs="+",
        help="a run folder (holds raw/); with --write-baseline, one or more runs of the same preset "
        "made under perturbations (thread count, CPU) to calibrate the tolerances",
    )  # fmt: skip
    p.add_argument(
        "--baseline",
        type=Path,
        default=Path("results/baseline/quick.json"),
        help="baseline JSON (default: %(default)s)",
    )
    p.add_argument("--write-baseline", type=Path, metavar="FILE", help="write FILE from this run instead")
    p.add_argument("--preset", default="quick", help="preset name recorded with --write-baseline")
    p.add_argument(
        "--tolerance", action="append", default=[], metavar="METRIC=TOL",
        help="tolerance recorded with --write-baseline, e.g. pixel_ap=0.1 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--noise-factor", type=float, default=NOISE_FACTOR,
        help="with --write-baseline: tolerance = max(floor, this x calibrated noise) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--run-config", metavar="HASH", help=RUN_CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(handler=run)


def _status(row: GateRow) -> str:
    if row.passed:
        return "ok"
    return "MISSING" if row.value is None else "REGRESSED"


def run(args: argparse.Namespace) -> int:
    """Compare (or write) and print every metric with its status."""
    if args.write_baseline:
        if args.run_config:
            raise UserError("--run-config compares one run; --write-baseline uses each run folder's last run")
        try:
            tolerances = {k: float(v) for k, v in (t.split("=", 1) for t in args.tolerance)}
        except ValueError:
            raise UserError(f"--tolerance takes METRIC=NUMBER, got {args.tolerance}") from None
        check_tolerances(tolerances, args.noise_factor)
        for run_dir in args.run_dir:
            print(f"check: {run_dir}: {select_run(run_dir).describe()}")
        path = write_baseline(
            args.run_dir, args.write_baseline, args.preset, tolerances, noise_factor=args.noise_factor
        )
        print(f"wrote baseline {path} from {len(args.run_dir)} run(s)")
        written = json.loads(Path(path).read_text())
        for run_dir, failing in written["calibration"].get("leave_one_out", {}).items():
            shown = f": {', '.join(failing[:3])}{', ...' if len(failing) > 3 else ''}" if failing else ""
            print(
                f"leave-one-out: {run_dir} fails {len(failing)} of {len(written['metrics'])} "
                f"against a baseline of the other runs{shown}"
            )
        return 0
    if len(args.run_dir) != 1:
        raise UserError("compare one run at a time (several runs go with --write-baseline)")
    selection = select_run(args.run_dir[0], args.run_config)
    if not args.json:
        print(f"check: {selection.describe()}")
    rows, unchecked = compare(args.run_dir[0], args.baseline, args.run_config)
    failed = [r for r in rows if not r.passed]
    if args.json:
        payload = [{**r.__dict__, "better": metric(r.key).direction, "passed": r.passed} for r in rows]
        print(json.dumps(payload, indent=2))
    else:
        table = [
            {"metric": r.key, "better": metric(r.key).direction, "baseline": r.baseline, "run": r.value,
             "delta": r.delta, "tolerance": r.tolerance, "status": _status(r)}
            for r in rows
        ]  # fmt: skip
        print(format_table(table))
    print(f"{len(rows) - len(failed)} of {len(rows)} metrics within tolerance of {args.baseline}")
    for r in failed:
        what = (
            "missing from the run"
            if r.value is None
            else f"{r.value:.4f} vs {r.baseline:.4f} (tol {r.tolerance})"
        )
        print(f"regression: {r.key}: {what}")
    if unchecked:
        print(
            f"note: {len(unchecked)} gated metric(s) of the run are not in the baseline and were not "
            f"checked (e.g. {unchecked[0]}); calibrate a new baseline with --write-baseline to gate them",
            file=sys.stderr,
        )
    return 1 if failed else 0
