"""``anobench generators [PATTERN]``: list the registered generators."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from anobench.generation.registry import get_generator, list_generators


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generators`` sub-command."""
    p = subparsers.add_parser("generators", help="list registered generators (wildcards allowed)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'dual*'")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each generator's config fields")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one generator per line (with its options when verbose)."""
    names = list_generators(args.pattern)
    if not names:
        print(f"no registered generator matches {args.pattern!r}; `anobench generators` lists them all")
    print_entries(names, get_generator, args.verbose)
    return 0


def print_entries(names: list[str], get: Callable[[str], type], verbose: bool) -> None:
    """One registered class per line (its docstring's first line), with its ``Config`` fields when verbose."""
    for name in names:
        cls = get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:20s} {doc}")
        if verbose:
            for f in dataclasses.fields(cls.Config):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                print(f"{'':20s}   {f.name} = {default!r}")
