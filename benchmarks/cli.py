"""``anobench``: the command line.

Each sub-command lives in ``benchmarks/commands/<name>.py`` and exposes ``register(subparsers)``;
its handler returns an exit code. User mistakes (bad paths, bad data, bad config) print one line
per problem and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import keyword
import os
import sys
from collections.abc import Sequence

from anobench.benchmarks import __version__
from anobench.benchmarks.errors import UserError
from anobench.downstream.errors import DownstreamInputError
from anobench.generation.errors import GenerationInputError

USER_ERRORS = (UserError, GenerationInputError, DownstreamInputError)
COMMANDS = (
    "run",
    "data",
    "generators",
    "segmenters",
    "generate",
    "import",
    "inspect",
    "filter",
    "export",
    "report",
    "check",
    "score",
    "metrics",
    "weights",
    "dualanodiff",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="anobench",
        description="Benchmark few-shot anomaly image generation (DualAnoDiff and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"anobench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = f"{name}_" if keyword.iskeyword(name) else name  # `import` lives in import_.py
        importlib.import_module(f"anobench.benchmarks.commands.{module}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anobench`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        if args.command is None:
            # `anobench` alone would be surprising as "run"; show the commands instead.
            parser.print_help()
            return 0
        parser.parse_args([args.command, "--help"])
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (e.g. `anobench generators | head -1`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # an --out / --cache naming a file where a folder is needed (or the other way round)
        what = {
            FileExistsError: "is a file where a folder is needed",
            NotADirectoryError: "a part of this path is a file, not a folder",
            IsADirectoryError: "is a folder where a file is needed",
        }[type(exc)]
        print(f"error: {exc.filename}: {what}; give another path", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"error: no space left on the device ({exc.filename or 'writing'}); free space and rerun "
              "the same command to resume", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
