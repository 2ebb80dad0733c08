"""Per-pair quality speed: pairs per second of ``compute_pair_quality`` on CPU.

Builds the embedded dataset (``--categories``, default nut), generates ``--n`` crop-paste pairs per
defect type, then times a cold run (detector fit + scoring) and a warm run (detector from the cache),
and prints pairs/s of each with the settings used.

Run:
    python -m anobench.benchmarks.perf.pair_quality_speed --n 500
    python -m anobench.benchmarks.perf.pair_quality_speed --n 50 --size 128 --coreset 0.02
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from anobench.benchmarks.cli import main as anobench
from anobench.benchmarks.data.synth import build_synthetic_dataset
from anobench.benchmarks.metrics.defaults import PAIR_DEFAULTS
from anobench.benchmarks.metrics.pair_quality import compute_pair_quality
from anobench.downstream.unsupervised import DetectorConfig


def main() -> None:
    """Time a cold and a warm run and print pairs/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="pairs per defect type (default 500)")
    parser.add_argument("--categories", nargs="+", default=["nut"])
    parser.add_argument(
        "--size", type=int, default=PAIR_DEFAULTS["detector"]["image_size"], help="detector px"
    )  # type: ignore[index]
    parser.add_argument("--feature-size", type=int, default=PAIR_DEFAULTS["feature_size"])
    parser.add_argument("--coreset", type=float, default=PAIR_DEFAULTS["detector"]["coreset_sampling_ratio"])  # type: ignore[index]
    args = parser.parse_args()
    detector = DetectorConfig(
        **{**PAIR_DEFAULTS["detector"], "image_size": args.size, "coreset_sampling_ratio": args.coreset},  # type: ignore[dict-item]
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = build_synthetic_dataset(Path(tmp) / "data", seed=0, categories=args.categories)
        out = Path(tmp) / "set"
        anobench(["generate", "--generator", "crop-paste", "--dataset", str(data), "--out", str(out),
                  "-n", str(args.n), "--categories", *args.categories])  # fmt: skip
        results = {}
        for run in ("cold", "warm"):
            start = time.perf_counter()
            r = compute_pair_quality(
                out, data, detector=detector, feature_size=args.feature_size, cache_dir=Path(tmp) / "cache",
                progress=False,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            n = len(r["per_pair"])
            results[run] = {"pairs": n, "seconds": round(seconds, 1), "pairs_per_s": round(n / seconds, 2)}
    settings = {"threads": torch.get_num_threads(), "detector_px": args.size, "feature_px": args.feature_size}
    settings.update(coreset=args.coreset, metrics=list(r["settings"]["metrics"]))
    print(json.dumps({**settings, **results}, indent=2))


if __name__ == "__main__":
    main()
