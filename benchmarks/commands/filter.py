"""``anobench filter SET --out DIR --keep RULE ...``: keep the pairs whose saved scores pass every rule."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anobench.benchmarks.metrics.defaults import PER_PAIR_METRICS
from anobench.benchmarks.metrics.filtering import filter_generated_set
from anobench.benchmarks.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``filter`` sub-command."""
    p = subparsers.add_parser(
        "filter", help="write the pairs of a generated set that pass rules on their per-pair scores"
    )
    p.add_argument(
        "set", type=Path, help="generated set with SET/scores.jsonl (anobench metrics SET --pairs)"
    )
    p.add_argument("--out", required=True, type=Path, help="new folder for the filtered set")
    p.add_argument(
        "--keep",
        action="append",
        required=True,
        metavar="RULE",
        help=f"'<metric> <op> <number|pNN>' (AND-ed, repeatable), metric from {','.join(PER_PAIR_METRICS)}, "
        "op from >= <= > < ==, pNN = the set's own NN-th percentile; e.g. 'mask_adherence >= 0.8'",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Filter and print what was kept per defect type."""
    summary = filter_generated_set(args.set, args.out, args.keep)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    rows = [{"type": k, **v} for k, v in summary["per_type"].items()]
    print(format_table(rows, ["type", "kept", "total"]))
    for rule, threshold in summary["thresholds"].items():
        print(f"rule {rule!r}: threshold {threshold:.4g}")
    print(f"kept {summary['kept']} of {summary['total']} pairs -> {summary['out']}")
    return 0
