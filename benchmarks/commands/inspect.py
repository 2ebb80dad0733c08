"""``anobench inspect DIR``: mask-quality table, saved per-pair scores per type and a sample grid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anobench.benchmarks.commands import positive_int
from anobench.benchmarks.commands.data import add_format_options
from anobench.benchmarks.data.categories import object_foregrounds
from anobench.benchmarks.metrics.api import json_safe
from anobench.benchmarks.metrics.catalogue import MASKS, PER_DEFECT, format_row, written_by
from anobench.benchmarks.metrics.defaults import PER_PAIR_METRICS
from anobench.benchmarks.metrics.pair_quality import score_summary
from anobench.benchmarks.runner.stage_names import GENMETRICS
from anobench.benchmarks.tables import format_table
from anobench.generation.format import read_generated_set
from anobench.generation.quality import COMPONENT_BINS, mask_quality, quality_figure

# The per-defect mask statistics, as the genmetrics jobs write them, in catalogue order.
COLUMNS = ["category", "defect", *(m.key for m in written_by(GENMETRICS, PER_DEFECT) if m.group == MASKS)]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` sub-command."""
    p = subparsers.add_parser("inspect", help="mask quality of a generated set and a figure of samples")
    p.add_argument("root", type=Path, help="the generated set (holds <category>/<defect>/{image,mask}/)")
    p.add_argument(
        "--dataset",
        type=Path,
        help="the dataset (any layout) whose normal training images give the object foregrounds",
    )
    p.add_argument("--category", help="only this category")
    p.add_argument("--out", type=Path, help="figure path (default: <root>/inspect.png)")
    p.add_argument(
        "--per-defect", type=positive_int, default=4, help="samples per defect type in the figure (default 4)"
    )
    p.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    add_format_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) and write the figure."""
    generated = read_generated_set(args.root, args.category)
    options = {"format": args.format, "resolution": args.resolution}
    foregrounds = (
        object_foregrounds(args.dataset, {c for c, _ in generated}, **options) if args.dataset else None
    )
    rows = mask_quality(generated, foregrounds)
    figure = quality_figure(
        generated, args.out or args.root / "inspect.png", args.per_defect, title=str(args.root)
    )
    scores = [r for r in score_summary(args.root) if not args.category or r["category"] == args.category]
    if args.json:
        payload = {"root": str(args.root), "figure": str(figure), "defects": rows, "pair_scores": scores}
        print(json.dumps(json_safe(payload), indent=2))
        return 0
    print(format_table([format_row(r) for r in rows], COLUMNS))
    print(f"components: masks with {'/'.join(COMPONENT_BINS)} connected components; areas in % of the image")
    if scores:
        print(
            format_table(json_safe(scores), ["category", "defect", "n_scored", *PER_PAIR_METRICS], digits=4)
        )
        print("per-pair scores (means per type) from scores.jsonl (anobench metrics SET --pairs)")
    print(f"figure: {figure}")
    return 0
