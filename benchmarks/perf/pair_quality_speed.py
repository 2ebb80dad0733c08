"""Per-pair quality speed: pairs per second of ``compute_pair_quality`` on CPU.

Builds the embedded dataset (``--categories``, default nut: 3 defect types), generates ``--n``
crop-paste pairs per defect type, then, for each size (``--sizes``; ``quick`` = the quick preset's
64 px detector and features, ``256`` = the library defaults, 256 px detector and 224 px features),
times a cold run (empty caches: detector fit, held-out real anomalies scored, then the pairs) and a
warm run (the fit and the real anomalies kept by the process: what every further set of a run
costs), and prints pairs/s of each with the settings, thread count and machine load.

Run:
    python -m anobench.benchmarks.perf.pair_quality_speed --n 500
    python -m anobench.benchmarks.perf.pair_quality_speed --n 50 --sizes quick --coreset 0.02
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from anobench.benchmarks.cli import main as anobench
from anobench.benchmarks.data.synth import build_synthetic_dataset
from anobench.benchmarks.metrics.defaults import PAIR_DEFAULTS
from anobench.benchmarks.metrics.pair_quality import clear_caches, compute_pair_quality
from anobench.downstream.unsupervised import DetectorConfig

DETECTOR: dict = PAIR_DEFAULTS["detector"]  # type: ignore[assignment]
#: size name -> (detector px, feature px)
SIZES = {"quick": (64, 64), "256": (int(DETECTOR["image_size"]), int(PAIR_DEFAULTS["feature_size"]))}  # type: ignore[call-overload]


def time_size(out: Path, data: Path, detector: DetectorConfig, feature_size: int, cache: Path) -> dict:
    """Cold and warm pairs/s of one size."""
    clear_caches()
    results: dict = {"detector_px": detector.image_size, "feature_px": feature_size}
    for run in ("cold", "warm"):
        start = time.perf_counter()
        r = compute_pair_quality(
            out,
            data,
            detector=detector,
            feature_size=feature_size,
            cache_dir=cache,
            progress=False,
            save=False,
        )
        seconds = time.perf_counter() - start
        n = len(r["per_pair"])
        results[run] = {"pairs": n, "seconds": round(seconds, 1), "pairs_per_s": round(n / seconds, 2)}
    results["metrics"] = [m for m in r["settings"]["metrics"] if m not in r["unavailable"]]
    return results


def main() -> None:
    """Time a cold and a warm run per size and print pairs/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="pairs per defect type (default 500)")
    parser.add_argument("--categories", nargs="+", default=["nut"])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["quick", "256"])
    parser.add_argument("--coreset", type=float, default=DETECTOR["coreset_sampling_ratio"])
    args = parser.parse_args()
    load = os.getloadavg()
    report: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "coreset": args.coreset}
    with tempfile.TemporaryDirectory() as tmp:
        data = build_synthetic_dataset(Path(tmp) / "data", seed=0, categories=args.categories)
        out = Path(tmp) / "set"
        anobench(["generate", "--generator", "crop-paste", "--dataset", str(data), "--out", str(out),
                  "-n", str(args.n), "--categories", *args.categories])  # fmt: skip
        for name in args.sizes:
            detector_px, feature_px = SIZES[name]
            detector = DetectorConfig(
                **{**DETECTOR, "image_size": detector_px, "coreset_sampling_ratio": args.coreset},
                device="cpu",
            )
            report[name] = time_size(out, data, detector, feature_px, Path(tmp) / f"cache-{name}")
    report["load_average_1_5_15"] = {
        "start": [round(x, 2) for x in load],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
