"""``anobench data synth|check|split|formats``: build, validate and split datasets in any layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from anobench.benchmarks.data.datasets import (
    check_dataset,
    detect_format,
    detection_order,
    get_dataset,
    list_categories,
    list_datasets,
    read_category,
    summary_rows,
)
from anobench.benchmarks.data.layout import CategoryData
from anobench.benchmarks.data.splits import SPLIT_PRESETS, make_split, manifest_name
from anobench.benchmarks.data.synth import build_synthetic_dataset, category_names
from anobench.benchmarks.tables import format_table


def add_format_options(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--resolution``, for every verb that reads a dataset."""
    parser.add_argument(
        "--format", choices=list_datasets(), help="dataset layout (default: detected from the folder)"
    )
    parser.add_argument("--resolution", help="Real-IAD image folder realiad_<RES> (default: the largest)")


def format_line(root: str | Path, format: str | None) -> str:
    """``format: visa (detected)`` or ``format: visa (--format)``, printed by the verbs."""
    return f"format: {format} (--format)" if format else f"format: {detect_format(root)} (detected)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` sub-commands."""
    p = subparsers.add_parser("data", help="build, check and split datasets")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    s = sub.add_parser("synth", help="write the embedded synthetic dataset (in any layout)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files (default 0)")
    s.add_argument("--categories", nargs="+", choices=category_names(), help="only these categories")
    s.add_argument(
        "--layout", default="mvtec", choices=list_datasets(), help="dataset layout (default mvtec)"
    )
    s.set_defaults(handler=synth)

    c = sub.add_parser("check", help="validate a dataset folder (any layout) and summarise it")
    c.add_argument("root", type=Path, help="dataset folder (holds the category folders)")
    c.add_argument("--categories", nargs="+", help="only these categories")
    add_format_options(c)
    c.set_defaults(handler=check)

    sp = sub.add_parser("split", help="write the few-shot split manifest (JSON) of each category")
    sp.add_argument("root", type=Path, help="dataset folder")
    sp.add_argument("--preset", default="strict", choices=SPLIT_PRESETS, help="split rule (default strict)")
    sp.add_argument("--categories", nargs="+", help="only these categories")
    sp.add_argument(
        "--out", type=Path, default=Path("splits"), help="folder for the manifests (default splits/)"
    )
    add_format_options(sp)
    sp.set_defaults(handler=split)

    f = sub.add_parser("formats", help="the dataset layouts, in detection order")
    f.set_defaults(handler=formats)


def print_notes(categories: list[CategoryData]) -> None:
    """One ``note:`` line per thing a reader left out or regrouped (private test sets, folded types)."""
    for note in (n for cat in categories for n in cat.notes):
        print(f"note: {note}")


def synth(args: argparse.Namespace) -> int:
    """Build the synthetic dataset."""
    t0 = time.perf_counter()
    root = build_synthetic_dataset(args.out, args.seed, args.categories, layout=args.layout)
    print(f"wrote the synthetic dataset ({args.layout} layout) to {root} in {time.perf_counter() - t0:.1f} s")
    print(format_table(summary_rows(check_dataset(root, format=args.layout))))
    return 0


def check(args: argparse.Namespace) -> int:
    """Validate and print a per-category summary."""
    print(format_line(args.root, args.format))
    categories = check_dataset(args.root, args.categories, format=args.format, resolution=args.resolution)
    print(format_table(summary_rows(categories)))
    print_notes(categories)
    print(f"ok: {len(categories)} categories in {args.root}")
    return 0


def split(args: argparse.Namespace) -> int:
    """Write one manifest per category and report counts and overlaps."""
    print(format_line(args.root, args.format))
    options = {"format": args.format, "resolution": args.resolution}
    rows, categories = [], []
    for name in args.categories or list_categories(args.root, **options):
        categories.append(read_category(args.root, name, **options))
        manifest = make_split(categories[-1], args.preset)
        path = manifest.write(args.out / manifest_name(name, args.preset))
        for defect, d in manifest.defects.items():
            rows.append({"category": name, "defect": defect, "total": d.n_total, "fewshot": len(d.fewshot),
                         "test": len(d.test), "overlap": len(d.overlap), "manifest": str(path)})  # fmt: skip
    print(format_table(rows))
    print_notes(categories)
    overlap = sum(r["overlap"] for r in rows)
    if overlap:
        print(f"note: preset {args.preset!r} puts {overlap} image(s) in both the few-shot and the test set")
    return 0


def formats(args: argparse.Namespace) -> int:
    """List the registered layouts in the order they are detected."""
    rows = [{"format": n, "layout": get_dataset(n).description} for n in detection_order()]
    print(format_table(rows))
    print("detection tries them top to bottom; --format NAME (data.format) overrides it")
    return 0
