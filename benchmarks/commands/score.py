"""``anobench score``: score any detector's anomaly maps on a category's test split (all metrics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anobench.benchmarks.commands.data import add_format_options
from anobench.benchmarks.data.datasets import read_category
from anobench.benchmarks.data.splits import SPLIT_PRESETS, make_split
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.catalogue import METRICS, format_row, ordered
from anobench.benchmarks.tables import format_table
from anobench.downstream.metrics import F1_MODES
from anobench.downstream.scoring import find_map_root, score_map_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` sub-command."""
    p = subparsers.add_parser(
        "score",
        help="score anomaly maps (PNG/TIFF/NPY, one per test image) with every metric",
        description="Maps live in MAPS/<defect>/<image stem>.npy|png|tiff (defect 'good' for good images); "
        "MAPS/<category>/test/<defect>/ and MAPS/<category>/<defect>/ are found too.",
    )
    p.add_argument(
        "--dataset", required=True, type=Path, help="dataset folder (any layout, see `anobench data formats`)"
    )
    p.add_argument("--category", required=True, help="category folder name")
    p.add_argument("--maps", required=True, type=Path, help="folder of anomaly maps")
    p.add_argument(
        "--split",
        choices=SPLIT_PRESETS,
        help="score only this split preset's held-out test images (default: all)",
    )
    p.add_argument(
        "--pixel-f1", choices=F1_MODES, default="exact", help="pixel F1-max thresholds (default exact)"
    )
    p.add_argument(
        "--pool-kernel",
        type=int,
        default=21,
        help="image score = max of the KxK mean-pooled map (1 = plain max)",
    )
    p.add_argument("--scores", type=Path, help="image scores file (JSON or CSV keyed <defect>/<stem>)")
    p.add_argument("--resize", type=int, help="score at NxN (maps bilinear, masks > 0.5), e.g. 256")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_format_options(p)
    p.set_defaults(handler=score)


def score(args: argparse.Namespace) -> int:
    """Read the maps, compute the metrics and print them."""
    if args.pool_kernel < 1 or args.pool_kernel % 2 == 0:
        raise UserError(f"--pool-kernel {args.pool_kernel}: must be an odd positive integer")
    if args.resize is not None and args.resize < 8:
        raise UserError(f"--resize {args.resize}: must be at least 8")
    if not args.maps.is_dir():
        raise UserError(f"--maps {args.maps}: folder not found")
    data = read_category(args.dataset, args.category, format=args.format, resolution=args.resolution)
    if args.split:
        manifest = make_split(data, args.split)
        test_good = [manifest.absolute(p) for p in manifest.test_good]
        test_anomalies = manifest.test_samples()
    else:
        test_good = list(data.test_good)
        test_anomalies = {d: [(s.image, s.mask) for s in samples] for d, samples in data.defects.items()}
    result = score_map_folder(
        test_good,
        test_anomalies,
        find_map_root(args.maps, args.category),
        pixel_f1=args.pixel_f1,
        pool_kernel=args.pool_kernel,
        scores_file=args.scores,
        resize=args.resize,
    )
    result = {"category": args.category, "split": args.split or "all-test", **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    metrics = result["metrics"]
    rows = [
        {"metric": METRICS[k].label, "key": k, "value": METRICS[k].format(metrics[k])}
        for k in ordered(metrics)
    ]
    print(format_table(rows))
    print()
    per_defect = [{"defect": d, **format_row(m)} for d, m in result["per_defect"].items()]
    columns = ordered(key for m in result["per_defect"].values() for key in m)
    print(format_table(per_defect, ["defect", *columns]))
    print(
        f"\n{args.category} ({result['split']}): {result['n_images']} images, "
        f"{result['n_anomalous']} anomalous, "
        f"at {result['resolution'][1]}x{result['resolution'][0]}; image score: {result['image_score']}; "
        f"pixel F1: {result['pixel_f1_mode']}"
    )
    return 0
