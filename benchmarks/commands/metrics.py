"""``anobench metrics``: IS, IC-LPIPS and KID (FID optional) of any generated set, ours or imported.

``--pairs`` (or pair metric names in ``--metrics``) adds the offline per-pair quality of
:mod:`anobench.benchmarks.metrics.pair_quality`, saved to ``SET/scores.jsonl`` for ``anobench filter``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anobench.benchmarks.commands import positive_int
from anobench.benchmarks.commands.data import add_format_options
from anobench.benchmarks.data.splits import SPLIT_PRESETS
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.io import write_json
from anobench.benchmarks.metrics.api import (
    KID_REFERENCES,
    compute_generation_metrics,
    json_safe,
    parse_metrics,
)
from anobench.benchmarks.metrics.catalogue import format_row
from anobench.benchmarks.metrics.defaults import (
    DEFAULTS,
    IC_LPIPS_VARIANTS,
    KEY_N_GENERATED,
    KEY_OVERALL,
    KEY_PER_CATEGORY,
    KEY_PER_TYPE,
    KEY_REFERENCE,
    KEY_SETTINGS,
    KEY_UNAVAILABLE,
    KEY_WEIGHTS,
    METRIC_NAMES,
    PAIR_DEFAULTS,
    PAIR_METRIC_NAMES,
)
from anobench.benchmarks.metrics.pair_quality import compute_pair_quality
from anobench.benchmarks.tables import format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` sub-command."""
    p = subparsers.add_parser("metrics", help="generation quality: IS, IC-LPIPS, KID (FID) per type/category")
    p.add_argument("set", nargs="?", type=Path, help="generated set (same as --generated)")
    p.add_argument("--generated", type=Path, help="generated set (<cat>/<defect>/image/*.png)")
    p.add_argument(
        "--dataset", required=True, type=Path, help="the dataset it was generated from (any layout)"
    )
    p.add_argument(
        "--categories", nargs="+", help="only these categories (default: all in the generated set)"
    )
    p.add_argument(
        "--metrics",
        help=f"comma-separated, from {','.join(METRIC_NAMES)} "
        f"(default {','.join(DEFAULTS['metrics'])}; IS/KID then degrade to 'unavailable' offline) "
        f"and the per-pair ones {','.join(PAIR_METRIC_NAMES)}",
    )
    p.add_argument(
        "--pairs",
        action="store_true",
        help=f"add the offline per-pair quality ({','.join(PAIR_DEFAULTS['metrics'])}), "
        "saved to SET/scores.jsonl",
    )
    p.add_argument(
        "--detector-cache", type=Path, help="fitted detectors (default ~/.cache/anobench/detectors)"
    )
    p.add_argument(
        "--o2mag-weights", type=Path, help="torchvision's inception_v3_google-0cc3c7bd.pth (kid_o2mag)"
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
    add_format_options(p)
    p.set_defaults(handler=metrics)


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per defect type, then per category, then overall."""
    names = [m for m in result[KEY_SETTINGS]["metrics"] if m not in result[KEY_UNAVAILABLE]]
    rows = [
        {
            "category": cat,
            "defect": defect,
            KEY_N_GENERATED: row[KEY_N_GENERATED],
            **{m: row.get(m) for m in names},
        }
        for cat, types in result[KEY_PER_TYPE].items()
        for defect, row in types.items()
    ]
    rows += [{"category": cat, "defect": "(mean)", **vals} for cat, vals in result[KEY_PER_CATEGORY].items()]
    rows.append({"category": "overall", "defect": "", **result[KEY_OVERALL]})
    return json_safe(rows)


def pair_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per type, category and overall: the generated set's row, then the held-out real anomalies' row."""
    ref = result[KEY_REFERENCE]
    rows = []
    for cat, types in result[KEY_PER_TYPE].items():
        for defect, row in types.items():
            rows.append(
                {"category": cat, "defect": defect, "of": "generated", "n": row[KEY_N_GENERATED], **row}
            )
            real = ref[KEY_PER_TYPE][cat].get(defect, {})
            rows.append({"category": cat, "defect": defect, "of": "real", "n": real.get("n_real"), **real})
        for name, source in (("generated", result), ("real", ref)):
            rows.append({"category": cat, "defect": "(mean)", "of": name, **source[KEY_PER_CATEGORY][cat]})
    for name, source in (("generated", result), ("real", ref)):
        rows.append({"category": "overall", "defect": "", "of": name, **source[KEY_OVERALL]})
    return json_safe(rows)


def split_metric_names(
    text: str | None, pairs: bool
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """``--metrics``/``--pairs`` -> (generation metrics or None for none, pair metrics or None for none)."""
    if text is None:
        return tuple(DEFAULTS["metrics"]), (tuple(PAIR_DEFAULTS["metrics"]) if pairs else None)  # type: ignore[arg-type]
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAIR_METRIC_NAMES and n not in METRIC_NAMES]
    if unknown or not names:
        raise UserError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from: "
            f"{', '.join(METRIC_NAMES + PAIR_METRIC_NAMES)}"
        )
    pair_names = [n for n in names if n in PAIR_METRIC_NAMES]
    generation = [n for n in names if n not in PAIR_METRIC_NAMES]
    if pairs and not pair_names:
        pair_names = list(PAIR_DEFAULTS["metrics"])  # type: ignore[call-overload]
    return (parse_metrics(generation) if generation else None), (tuple(pair_names) or None)


def print_pair_quality(result: dict[str, Any]) -> None:
    """The per-pair quality table: generated vs held-out real, per type, category and overall."""
    names = [m for m in result[KEY_SETTINGS]["metrics"] if m not in result[KEY_UNAVAILABLE]]
    print(format_table(pair_rows(result), ["category", "defect", "of", "n", *names], digits=4))
    print(
        f"per-pair scores: {result[KEY_SETTINGS]['scores_file']}; features: "
        f"{result[KEY_SETTINGS]['feature_layer']}; detector {result[KEY_SETTINGS]['detector']['row']}"
    )
    for name, reason in result[KEY_UNAVAILABLE].items():
        print(f"{name}: unavailable: {reason}")


def metrics(args: argparse.Namespace) -> int:
    """Compute and print (table or JSON)."""
    generated = args.generated or args.set
    if generated is None:
        raise UserError("metrics: give the generated set (anobench metrics SET --dataset DATA)")
    generation_names, pair_names = split_metric_names(args.metrics, args.pairs)
    pair_result = None
    if pair_names:
        pair_result = compute_pair_quality(
            generated,
            args.dataset,
            args.categories,
            metrics=None if pair_names == tuple(PAIR_DEFAULTS["metrics"]) else pair_names,  # type: ignore[arg-type]
            split_preset=args.split,
            seed=args.seed,
            cache_dir=args.detector_cache,
            weights_cache=args.weights_cache,
            o2mag_weights=args.o2mag_weights,
            format=args.format,
            resolution=args.resolution,
        )
    if generation_names is None:
        safe = json_safe(pair_result)
        if args.out:
            write_json(args.out, safe)
        if args.json:
            print(json.dumps(safe, indent=2))
        else:
            print_pair_quality(pair_result)  # type: ignore[arg-type]
        return 0
    result = compute_generation_metrics(
        generated,
        args.dataset,
        args.categories,
        split_preset=args.split,
        metrics=generation_names if args.metrics else None,
        variant=args.ic_lpips_variant,
        seed=args.seed,
        inception_weights=args.inception_weights,
        weights_cache=args.weights_cache,
        is_resize=args.is_resize,
        kid_reference=args.kid_reference,
        batch_size=args.batch_size,
        format=args.format,
        resolution=args.resolution,
    )
    if pair_result is not None:
        result["pair_quality"] = pair_result
    safe = json_safe(result)
    if args.out:
        write_json(args.out, safe)
    if args.json:
        print(json.dumps(safe, indent=2))
        return 0
    names = [m for m in result[KEY_SETTINGS]["metrics"] if m not in result[KEY_UNAVAILABLE]]
    table = [format_row(row) for row in summary_rows(result)]
    print(format_table(table, ["category", "defect", KEY_N_GENERATED, *names]))
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
    if pair_result is not None:
        print_pair_quality(pair_result)
    return 0
