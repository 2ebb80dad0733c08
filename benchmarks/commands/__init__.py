"""The ``anobench`` sub-commands, one module each (see :mod:`anobench.benchmarks.cli`)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """Argparse type: an integer >= 1 (``--batch-size 0`` is an error, exit 2, not a crash or a hang)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
