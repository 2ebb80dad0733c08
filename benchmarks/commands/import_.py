"""``anobench import --layout L SRC --out DIR``: released generated data -> the generated-set format.

(The module is ``import_`` because ``import`` is a Python keyword; the command is ``import``.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anobench.benchmarks.tables import format_table
from anobench.generation.importers import LAYOUTS, import_generated


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import`` sub-command."""
    layouts = "; ".join(f"{name}: {layout.description}" for name, layout in LAYOUTS.items())
    p = subparsers.add_parser(
        "import",
        help="import released generated data (AnomalyDiffusion, DualAnoDiff, SeaS, O2MAG, AnoGen, MAGIC, any "
        "folder) into our format",
        description=f"Copy released pairs into the generated-set format. Layouts: {layouts}.",
    )
    p.add_argument("src", type=Path, help="the released data (category folders, or one with --category)")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="how SRC is organised")
    p.add_argument(
        "--out", required=True, type=Path, help="the generated set to write (resumed if it exists)"
    )
    p.add_argument(
        "--mask-threshold",
        type=float,
        default=0.5,
        help="soft masks: anomalous where grey/255 > this (default 0.5)",
    )
    p.add_argument("--category", help="import only this category (or name SRC when it is one category)")
    p.add_argument(
        "--image-pattern",
        help="--layout folder: image file names, e.g. '{stem}.png' or '{i}_*_triag.png' ({field}: any run, "
        "*: anything, a final .*: any extension; 're:' + a regex with named groups); default '{stem}.*'",
    )
    p.add_argument(
        "--mask-pattern",
        help="--layout folder: mask file names using the image pattern's fields, e.g. '{stem}_mask.png'; "
        "default '{stem}.*'",
    )
    p.add_argument("--generator", help="generator name for the manifest (default: the layout name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Import and print the pair counts."""
    counts = import_generated(
        args.layout, args.src, args.out, mask_threshold=args.mask_threshold, category=args.category,
        generator=args.generator, image_pattern=args.image_pattern, mask_pattern=args.mask_pattern,
        progress=not args.no_progress,
    )  # fmt: skip
    rows = [{"category": c, "defect": d, "pairs": n} for (c, d), n in sorted(counts.items())]
    print(format_table(rows))
    print(f"imported {sum(counts.values())} pairs into {args.out} (masks binarised at {args.mask_threshold})")
    return 0
