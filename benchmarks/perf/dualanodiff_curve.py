"""Offline DualAnoDiff: quality against time over base steps x dual steps, next to real-fewshot.

For every (base UNet steps, dual fine-tune steps) setting, runs ``PRESET`` (default ``quick``:
the embedded dataset, 64 px) with the generators ``dualanodiff`` and the reference
``real-fewshot`` only, into one run folder (so the reference rows and the cached offline bases are
computed once), then prints one row per setting and category with what it cost (the generate
job's seconds: base training when cold, dual fine-tune and sampling) and what it gave: mask area,
mask adherence, defect-type fidelity, ``kid_effnet_lite0`` (per-pair quality) and the downstream
image / pixel AUROC. The ``real-fewshot`` row is the target the issue sets.

Run (about 5-10 minutes per setting on 2 cores; the first setting per base also trains the base)::

    python -m anobench.benchmarks.perf.dualanodiff_curve --base-steps 300 800 --dual-steps 35 200
    python -m anobench.benchmarks.perf.dualanodiff_curve --base-steps 300 --dual-steps 100 --seeds 0 1 2

Settings from ``--set KEY=VALUE`` apply to every run (e.g. ``--set data.categories=[nut]``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

from anobench.benchmarks.cli import main as anobench
from anobench.benchmarks.tables import format_table

GENERATOR = "dualanodiff"
REFERENCE = "real-fewshot"
GENMETRICS = ("mask_area", "mask_adherence", "type_fidelity", "type_fidelity_region", "kid_effnet_lite0")
DOWNSTREAM = ("image_auroc", "pixel_auroc")
OPTIONS = f"generation.options.{GENERATOR}"


def run_setting(
    preset: str, out: Path, base_steps: int, dual_steps: int, seeds: list[int], extra: list[str]
) -> None:
    """One ``anobench run`` of the preset restricted to DualAnoDiff + real-fewshot at this setting."""
    overrides = [
        f"generation.generators=[{GENERATOR}]",
        f"generation.reference=[{REFERENCE}]",
        "evaluation.classify=false",
        "evaluation.detectors=[]",
        "genmetrics.pair_quality.enabled=true",
        f"seeds=[{','.join(map(str, seeds))}]",
        f"{OPTIONS}.base_unet_steps={base_steps}",
        f"{OPTIONS}.max_train_steps={dual_steps}",
        *extra,
    ]
    code = anobench(
        ["run", preset, "--out", str(out), "--no-progress", *(a for o in overrides for a in ("--set", o))]
    )
    if code:
        raise SystemExit(f"anobench run exited with {code} at base {base_steps}, dual {dual_steps}")


def _label(record: dict) -> tuple:
    """(generator, base steps, dual steps, category) of a job record (every record keeps the run config)."""
    key, config = record["key"], record["config"]
    if key["generator"] != GENERATOR:
        return key["generator"], "-", "-", key["category"]
    return (
        key["generator"],
        config[f"{OPTIONS}.base_unet_steps"],
        config[f"{OPTIONS}.max_train_steps"],
        key["category"],
    )


def collect(out: Path) -> list[dict]:
    """One row per (generator setting, category): means over seeds of seconds and metrics."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for stage, names in (("generate", ()), ("genmetrics", GENMETRICS), ("downstream", DOWNSTREAM)):
        for path in sorted((out / "raw" / stage).glob("*.json")):
            record = json.loads(path.read_text())
            values = cells[_label(record)]
            if stage == "generate":
                values["generate_s"].append(record["timings"]["seconds"])
            for name in names:
                if record["metrics"].get(name) is not None:
                    values[name].append(record["metrics"][name])
    rows = []
    for (generator, base, dual, category), values in sorted(cells.items(), key=lambda kv: str(kv[0])):
        row = {"generator": generator, "base_steps": base, "dual_steps": dual, "category": category}
        row |= {k: statistics.mean(v) for k, v in values.items()} | {"seeds": len(values["generate_s"])}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run every setting, then print (or ``--json``) the quality/time table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--base-steps", nargs="+", type=int, default=[300, 800])
    parser.add_argument("--dual-steps", nargs="+", type=int, default=[35, 200])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / "dualanodiff-curve")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    for base in args.base_steps:
        for dual in args.dual_steps:
            run_setting(args.preset, args.out, base, dual, args.seeds, args.extra)
    rows = collect(args.out)
    if args.json:
        print(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=2))
        return
    columns = [
        "generator",
        "base_steps",
        "dual_steps",
        "category",
        "seeds",
        "generate_s",
        *GENMETRICS,
        *DOWNSTREAM,
    ]
    print(format_table([{c: r.get(c) for c in columns} for r in rows], columns))


if __name__ == "__main__":
    main()
