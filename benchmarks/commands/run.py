"""``anobench run [PRESET]``: run a benchmark preset (default ``quick`` on the embedded dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from benchmarks.config import list_presets, load_config
from benchmarks.pipeline import categories, dataset_root, run_cell
from benchmarks.provenance import utc_now
from benchmarks.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser("run", help="run a benchmark preset (default: quick, embedded dataset)")
    p.add_argument(
        "preset", nargs="?", default="quick", help=f"preset name ({', '.join(list_presets())}) or YAML path"
    )
    p.add_argument("--dataset", help="MVTec-AD-layout folder (overrides data.root)")
    p.add_argument("--out", type=Path, help="run folder (default: <output_dir>/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set segmenter.epochs=2 (repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run every cell of the grid and print the per-category table."""
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.root={args.dataset}")
    config = load_config(args.preset, overrides)
    run_dir = args.out or Path(config.output_dir) / config.name
    root = dataset_root(config)
    cells = [
        (c, g, s)
        for c in categories(config, root)
        for g in config.generation.generators
        for s in config.seeds
    ]
    print(f"{utc_now()} run {config.name!r}: {len(cells)} cells on {root} -> {run_dir}")
    rows = []
    for category, generator, seed in tqdm(cells, desc="grid", unit="cell", disable=args.no_progress):
        result = run_cell(config, root, category, generator, seed, run_dir, progress=not args.no_progress)
        rows.append({"category": category, "generator": generator, "seed": seed, **result["metrics"]})
    print(format_table(rows, ["category", "generator", "seed", "image_auroc", "pixel_auroc"]))
    print(f"raw results: {run_dir / 'raw'}")
    return 0
