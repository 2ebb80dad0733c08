"""``anobench generate``: fit one generator on a category's few-shot split and write a generated set."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from anobench.benchmarks.commands.data import add_format_options, format_line
from anobench.benchmarks.config import RunConfig
from anobench.benchmarks.data.datasets import list_categories
from anobench.benchmarks.data.splits import SPLIT_PRESETS
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.runner.stages import generate_stage, split_stage


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` sub-command."""
    p = subparsers.add_parser("generate", help="fit a generator on the few-shot split and write pairs")
    p.add_argument("--generator", required=True, help="registered name (see `anobench generators`)")
    p.add_argument("--dataset", required=True, type=Path, help="dataset folder (any layout)")
    p.add_argument("--categories", nargs="+", help="categories (default: all)")
    p.add_argument("--out", required=True, type=Path, help="generated-set folder (resumed if it exists)")
    p.add_argument("-n", "--n-per-defect", type=int, default=500, help="pairs per defect type (default 500)")
    p.add_argument("--seed", type=int, default=0, help="run seed; pair i uses a seed derived from it")
    p.add_argument("--split", default="strict", choices=SPLIT_PRESETS, help="few-shot split preset")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="generator config field, e.g. --option image_size=256 (repeatable)")  # fmt: skip
    add_format_options(p)
    p.set_defaults(handler=run)


def _options(pairs: list[str]) -> dict[str, object]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--option {pair!r}: expected KEY=VALUE")
        key, text = pair.split("=", 1)
        options[key] = yaml.safe_load(text)
    return options


def run(args: argparse.Namespace) -> int:
    """Generate for each category and print where the set is."""
    if args.n_per_defect < 1:
        raise UserError(f"--n-per-defect {args.n_per_defect}: must be at least 1")
    config = RunConfig()
    config.generation.n_per_defect = args.n_per_defect
    config.generation.options = {args.generator: _options(args.option)}
    options = {"format": args.format, "resolution": args.resolution}
    print(format_line(args.dataset, args.format))
    for category in args.categories or list_categories(args.dataset, **options):
        manifest = split_stage(args.dataset, category, args.split, args.out, **options)
        generate_stage(config, manifest, args.generator, args.seed, args.out)
        print(
            f"{category}: {args.n_per_defect} pairs per defect type ({', '.join(sorted(manifest.defects))})"
        )
    print(f"generated set: {args.out} (manifest.jsonl lists generator, seed and config hash per pair)")
    return 0
