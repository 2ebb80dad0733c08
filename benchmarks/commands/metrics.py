"""``anobench metrics``: IS, IC-LPIPS and KID (FID optional) of any generated set, ours or imported."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from anobench.benchmarks.commands import positive_int
from anobench.benchmarks.data.splits import SPLIT_PRESETS
from anobench.benchmarks.metrics.api import KID_REFERENCES, compute_generation_metrics, parse_metrics
from anobench.benchmarks.metrics.defaults import (
    DEFAULTS,
    IC_LPIPS_VARIANTS,
    KEY_OVERALL,
    KEY_PER_CATEGORY,
    KEY_PER_TYPE,
    KEY_SETTINGS,
    KEY_UNAVAILABLE,
    KEY_WEIGHTS,
    METRIC_NAMES,
)
from anobench.benchmarks.pipeline import write_json
from anobench.benchmarks.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` sub-command."""
    p = subparsers.add_parser("metrics", help="generation quality: IS, IC-LPIPS, KID (FID) per type/category")
    p.add_argument("--generated", required=True, type=Path, help="generated set (<cat>/<defect>/image/*.png)")
    p.add_argument(
        "--dataset", required=True, type=Path, help="the MVTec-layout dataset it was generated from"
    )
    p.add_argument(
        "--categories", nargs="+", help="only these categories (default: all in the generated set)"
    )
    p.add_argument(
        "--metrics",
        help=f"comma-separated, from {','.join(METRIC_NAMES)} "
        f"(default {','.join(DEFAULTS['metrics'])}; IS/KID then degrade to 'unavailable' offline)",
    )
    p.add_argument(
        "--ic-lpips-variant",
        default=DEFAULTS["ic_lpips_variant"],
        choices=list(IC_LPIPS_VARIANTS),
        help="IC-LPIPS recipe (default anomalydiffusion: VGG, <=50 per cluster, 256 px)",
    )
    p.add_argument(
        "--split",
        default=DEFAULTS["split_preset"],
        choices=SPLIT_PRESETS,
        help="which few-shot images are the IC-LPIPS centres (default strict: first N//3)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="IC-LPIPS subsampling seed (default 0)")
    p.add_argument(
        "--inception-weights", type=Path, help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth"
    )
    p.add_argument(
        "--weights-cache", type=Path, help="anobench weights cache (default ~/.cache/anobench/weights)"
    )
    p.add_argument(
        "--is-resize",
        type=int,
        default=DEFAULTS["is_resize"],
        choices=(0, 256),
        help="256: resize to 256x256 before IS/KID/FID (SeaS); 0: raw files (DualAnoDiff, default)",
    )
    p.add_argument(
        "--kid-reference",
        default=DEFAULTS["kid_reference"],
        choices=KID_REFERENCES,
        help="real images KID/FID compare with: all anomalies of the type, or the test split's",
    )
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="LPIPS batch size")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")
    p.set_defaults(handler=metrics)


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per defect type, then per category, then overall."""
    names = [m for m in result[KEY_SETTINGS]["metrics"] if m not in result[KEY_UNAVAILABLE]]
    rows = [
        {"category": cat, "defect": defect, "n": row["n_generated"], **{m: row.get(m) for m in names}}
        for cat, types in result[KEY_PER_TYPE].items()
        for defect, row in types.items()
    ]
    rows += [{"category": cat, "defect": "(mean)", **vals} for cat, vals in result[KEY_PER_CATEGORY].items()]
    rows.append({"category": "overall", "defect": "", **result[KEY_OVERALL]})
    return json_safe(rows)


def metrics(args: argparse.Namespace) -> int:
    """Compute and print (table or JSON)."""
    result = compute_generation_metrics(
        args.generated,
        args.dataset,
        args.categories,
        split_preset=args.split,
        metrics=parse_metrics(args.metrics),
        variant=args.ic_lpips_variant,
        seed=args.seed,
        inception_weights=args.inception_weights,
        weights_cache=args.weights_cache,
        is_resize=args.is_resize,
        kid_reference=args.kid_reference,
        batch_size=args.batch_size,
    )
    safe = json_safe(result)
    if args.out:
        write_json(args.out, safe)
    if args.json:
        print(json.dumps(safe, indent=2))
        return 0
    names = [m for m in result[KEY_SETTINGS]["metrics"] if m not in result[KEY_UNAVAILABLE]]
    print(format_table(summary_rows(result), ["category", "defect", "n", *names], digits=4))
    print(f"IC-LPIPS variant: {result[KEY_SETTINGS]['ic_lpips_variant']['name']}, seed {args.seed}")
    for info in result[KEY_WEIGHTS].values():
        print(
            f"weights {info['name']}: sha256 {info['sha256'][:16]}... "
            f"({info['source']}, official={info['official']})"
        )
    by_reason: dict[str, list[str]] = {}
    for name, reason in result[KEY_UNAVAILABLE].items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names_out in by_reason.items():
        print(f"{', '.join(names_out)}: unavailable: {reason}")
    return 0
