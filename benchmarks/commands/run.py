"""``anobench run [PRESET]``: run a benchmark preset (default ``quick`` on the embedded dataset)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anobench.benchmarks.commands import positive_int
from anobench.benchmarks.commands.data import add_format_options
from anobench.benchmarks.config import list_presets, load_config
from anobench.benchmarks.data.datasets import detect_format
from anobench.benchmarks.metrics.catalogue import format_row, headline
from anobench.benchmarks.provenance import utc_now
from anobench.benchmarks.report.tables import row_label
from anobench.benchmarks.runner.backends import make_backend, run_grid
from anobench.benchmarks.runner.grid import (
    data_fingerprints,
    dataset_root,
    expand_grid,
    grid_categories,
    record_grid,
)
from anobench.benchmarks.runner.jobs import smoke_size
from anobench.benchmarks.runner.plan import format_plan, load_costs, probe_seconds, probed_costs
from anobench.benchmarks.runner.stage_names import DOWNSTREAM
from anobench.benchmarks.tables import format_table
from anobench.generation.locking import FolderLock


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser("run", help="run a benchmark preset (default: quick, embedded dataset)")
    p.add_argument(
        "preset", nargs="?", default="quick", help=f"preset name ({', '.join(list_presets())}) or YAML path"
    )
    p.add_argument("--dataset", help="dataset folder, any layout (overrides data.root)")
    p.add_argument("--out", type=Path, help="run folder (default: <output_dir>/<name>)")
    p.add_argument("--backend", choices=["serial", "dask"], help="overrides runner.backend")
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); implies --backend dask")
    p.add_argument(
        "--workers", type=positive_int, help="LocalCluster workers (default: one per GPU or CPU slot)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set segmenter.epochs=2 (repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--plan", action="store_true", help="print the grid and a cost estimate per stage, run nothing"
    )
    p.add_argument(
        "--no-probe", action="store_true",
        help="with --plan: the stored seconds as they are, without timing this machine first",
    )  # fmt: skip
    add_format_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the grid (resuming where a previous run stopped) and print the per-category table."""
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.root={args.dataset}")
    if args.format:
        overrides.append(f"data.format={args.format}")
    if args.resolution:
        overrides.append(f"data.resolution={args.resolution}")
    if args.scheduler:
        overrides += ["runner.backend=dask", f"runner.scheduler={args.scheduler}"]
    if args.backend:
        overrides.append(f"runner.backend={args.backend}")
    if args.workers is not None:
        overrides.append(f"runner.n_workers={args.workers}")
    config = load_config(args.preset, overrides)
    run_dir = args.out or Path(config.output_dir) / config.name
    root = dataset_root(config)
    names = grid_categories(config, root)
    dataset_format = config.data.format or f"{detect_format(root)}, detected"
    fingerprints = data_fingerprints(config, root, names)  # reads and splits each category first
    backend = make_backend(
        config.runner.backend, config.runner.scheduler, config.runner.n_workers, progress=not args.no_progress
    )
    if args.plan:
        jobs = expand_grid(config, root, run_dir, names, fingerprints)
        print(f"plan for {config.name!r}: {len(jobs)} jobs, categories {', '.join(names)} ({dataset_format})")
        costs = load_costs() if args.no_probe else probed_costs(load_costs(), probe_seconds())
        print(format_plan(jobs, config, costs, workers=backend.slots))
        return 0
    with FolderLock(run_dir):  # one writer per run folder; report and check read without it
        jobs = expand_grid(config, root, run_dir, names, fingerprints)
        record = record_grid(run_dir, config.name, jobs)
        print(
            f"{utc_now()} run {config.name!r} (run config {record['run_config']}): {len(jobs)} jobs "
            f"on {root} ({dataset_format}) -> {run_dir} ({backend.name} backend)"
        )
        summary = run_grid(jobs, backend, progress=not args.no_progress)

    rows = []
    for job in jobs:
        if job.key.stage == DOWNSTREAM and job.done():
            result = json.loads(job.result_path.read_text())
            label = row_label(job.key.generator, smoke_size(job.config, job.key.generator))
            rows.append({"category": job.key.category, "generator": label, "seed": job.key.seed,
                         "segmenter": job.key.segmenter, "normal": job.config.segmenter.normal_fraction,
                         **format_row(result["metrics"])})  # fmt: skip
    if rows:
        varied = [c for c in ("segmenter", "normal") if len({str(r[c]) for r in rows}) > 1]
        print(format_table(rows, ["category", "generator", *varied, "seed", *headline(DOWNSTREAM)]))
    print(
        f"{summary.count('done')} jobs run, {summary.count('skipped')} already done, "
        f"{len(summary.failures)} failed or blocked, in {summary.seconds:.0f} s; "
        f"raw results: {run_dir / 'raw'}"
    )
    for outcome in summary.failures:
        print(f"{outcome.status}: {outcome.key.label()}: {outcome.error}")
    return 1 if summary.failures else 0
