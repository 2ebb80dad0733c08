"""``anobench inspect DIR``: mask-quality table and sample grid of a generated set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anobench.benchmarks.commands import positive_int
from anobench.benchmarks.pipeline import object_foregrounds
from anobench.benchmarks.tables import format_table
from anobench.generation.format import read_generated_set
from anobench.generation.quality import COMPONENT_BINS, mask_quality, quality_figure

COLUMNS = ["category", "defect", "n", "area_mean", "area_median", "area_p5", "area_p95", "components_mean",
           "components", "empty_fraction", "inside_object"]  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` sub-command."""
    p = subparsers.add_parser("inspect", help="mask quality of a generated set and a figure of samples")
    p.add_argument("root", type=Path, help="the generated set (holds <category>/<defect>/{image,mask}/)")
    p.add_argument(
        "--dataset",
        type=Path,
        help="MVTec-layout dataset whose train/good images give the object foregrounds",
    )
    p.add_argument("--category", help="only this category")
    p.add_argument("--out", type=Path, help="figure path (default: <root>/inspect.png)")
    p.add_argument(
        "--per-defect", type=positive_int, default=4, help="samples per defect type in the figure (default 4)"
    )
    p.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) and write the figure."""
    generated = read_generated_set(args.root, args.category)
    foregrounds = object_foregrounds(args.dataset, {c for c, _ in generated}) if args.dataset else None
    rows = mask_quality(generated, foregrounds)
    figure = quality_figure(
        generated, args.out or args.root / "inspect.png", args.per_defect, title=str(args.root)
    )
    if args.json:
        print(json.dumps({"root": str(args.root), "figure": str(figure), "defects": rows}, indent=2))
        return 0
    table = [{**r, "components": "/".join(str(r["components"][b]) for b in COMPONENT_BINS)} for r in rows]  # type: ignore[index]
    print(format_table(table, COLUMNS))
    print(
        f"components: masks with {'/'.join(COMPONENT_BINS)} connected components; areas are image fractions"
    )
    print(f"figure: {figure}")
    return 0
