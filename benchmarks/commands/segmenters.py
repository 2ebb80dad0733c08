"""``anobench segmenters [PATTERN]``: list the registered downstream segmenters."""

from __future__ import annotations

import argparse

from anobench.benchmarks.commands.generators import print_entries
from anobench.downstream.segmenters import get_segmenter, list_segmenters


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segmenters`` sub-command."""
    p = subparsers.add_parser(
        "segmenters", help="list registered downstream segmenters (select with downstream.segmenters=[...])"
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'smp-*'")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each segmenter's config fields")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one segmenter per line (with its options when verbose)."""
    names = list_segmenters(args.pattern)
    if not names:
        print(f"no registered segmenter matches {args.pattern!r}; `anobench segmenters` lists them all")
    print_entries(names, get_segmenter, args.verbose)
    return 0
