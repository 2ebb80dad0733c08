"""``anobench export SET --to anomalib-folder|coco|mvtec OUT``: a generated set in another tool's layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from anobench.benchmarks.commands.data import add_format_options
from anobench.benchmarks.data.export import EXPORT_FORMATS, export_generated_set


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser("export", help="a generated set for anomalib Folder, COCO or MVTec readers")
    p.add_argument("root", type=Path, help="the generated set (holds <category>/<defect>/{image,mask}/)")
    p.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="target layout")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--dataset", type=Path, help="dataset giving the normal images (anomalib-folder, mvtec)")
    add_format_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the export and say where."""
    options = {"format": args.format, "resolution": args.resolution} if args.dataset else {}
    out = export_generated_set(args.root, args.to, args.out, args.dataset, **options)
    print(f"{args.to}: {out}")
    return 0
