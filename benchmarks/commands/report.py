"""``anobench report RUN_DIR``: tables (Markdown, CSV, LaTeX), figures and a report page."""

from __future__ import annotations

import argparse
from pathlib import Path

from anobench.benchmarks.report.collect import RUN_CONFIG_HELP, select_run
from anobench.benchmarks.report.page import render_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser("report", help="render tables and figures of a run from its raw JSON")
    p.add_argument("run_dir", type=Path, help="a run folder (holds raw/)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report)")
    p.add_argument("--run-config", metavar="HASH", help=RUN_CONFIG_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Render and print where the page is."""
    print(f"report: {select_run(args.run_dir, args.run_config).describe()}")
    page = render_report(args.run_dir, args.out, args.run_config)
    print(f"report: {page}")
    return 0
