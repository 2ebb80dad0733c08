"""IC-LPIPS speed: batched pairwise LPIPS vs the reference's one-call-per-pair loop (CPU by default).

Writes ``--n`` synthetic 256 px images per defect type (coloured blobs on a texture, so the clusters
are uneven), scores them with the real converted LPIPS weights and prints the time per type, with
features cached (once per image) and without (assignment and distances each compute them). Then
times the naive loop (``model(x_i, x_j)`` for every pair, as AnomalyDiffusion's script does) on a
subset and our batched distances on the same subset, checks they agree, and prints the ratio.

Run:
    python -m anobench.benchmarks.perf.ic_lpips_speed --n 500 --types 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anobench.benchmarks.metrics.defaults import IC_LPIPS_VARIANTS
from anobench.benchmarks.metrics.ic_lpips import LPIPSDistance, ic_lpips_type, load_lpips_input, type_rng
from anobench.benchmarks.metrics.weights import load_lpips


def synthetic_images(folder: Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """``n`` PNGs: a smooth random background plus a few coloured discs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        low = rng.random((8, 8, 3))
        image = np.asarray(
            Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), float
        )
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(10, 60))]
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def main() -> None:
    """Time IC-LPIPS per type and the batched-vs-naive ratio; print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="generated images per defect type")
    parser.add_argument("--types", type=int, default=1, help="defect types to time")
    parser.add_argument("--centres", type=int, default=5, help="few-shot real images (cluster centres)")
    parser.add_argument("--variant", default="anomalydiffusion", choices=list(IC_LPIPS_VARIANTS))
    parser.add_argument("--naive-subset", type=int, default=8, help="images in the naive-loop comparison")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--weights-cache", type=Path, help="anobench weights cache")
    args = parser.parse_args()
    variant = IC_LPIPS_VARIANTS[args.variant]
    model, _ = load_lpips(variant.net, args.weights_cache)
    distance = LPIPSDistance(model, variant.size, args.batch_size)
    uncached = LPIPSDistance(model, variant.size, args.batch_size, cache_mb=0)
    common = {
        "variant": variant.name,
        "net": variant.net,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        probe = synthetic_images(Path(tmp) / "probe", 2 * args.batch_size, seed=7)
        t0 = time.perf_counter()
        distance.features_of(probe)
        rate = len(probe) / (time.perf_counter() - t0)
        print(json.dumps({**common, "measure": "feature_images_per_s", "value": round(rate, 2)}), flush=True)
        for t in range(args.types):
            generated = synthetic_images(Path(tmp) / f"type{t}" / "gen", args.n, seed=t)
            centres = synthetic_images(Path(tmp) / f"type{t}" / "real", args.centres, seed=1000 + t)
            seconds, outs = {}, {}
            for name, dist in (("uncached", uncached), ("cached", distance)):  # features twice / once
                dist.clear()
                t0 = time.perf_counter()
                outs[name] = ic_lpips_type(
                    generated, centres, dist, variant.max_per_cluster, type_rng(0, "perf", str(t))
                )
                seconds[name] = time.perf_counter() - t0
            out = outs["cached"]
            print(
                json.dumps(
                    {
                        **common,
                        "measure": "ic_lpips_per_type",
                        "n_generated": args.n,
                        "n_centres": args.centres,
                        "seconds": round(seconds["cached"], 1),
                        "seconds_features_twice": round(seconds["uncached"], 1),
                        "ratio_twice_over_once": round(seconds["uncached"] / seconds["cached"], 2),
                        "ic_lpips": out["score"],
                        "abs_diff_vs_twice": abs(out["score"] - outs["uncached"]["score"]),
                        "cluster_sizes": out["cluster_sizes"],
                    }
                ),
                flush=True,
            )
        subset = synthetic_images(Path(tmp) / "naive", args.naive_subset, seed=99)
        pairs = list(itertools.combinations(range(len(subset)), 2))
        t0 = time.perf_counter()
        batched = distance.within(subset)
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        x = load_lpips_input(subset, variant.size)
        with torch.no_grad():
            naive = [model(x[i : i + 1], x[j : j + 1]).item() for i, j in pairs]
        t_naive = time.perf_counter() - t0
        diff = max(abs(naive[k] - batched[i, j]) for k, (i, j) in enumerate(pairs))
        print(
            json.dumps(
                {
                    **common,
                    "measure": "batched_vs_naive_pairs",
                    "images": len(subset),
                    "pairs": len(pairs),
                    "batched_s": round(t_batched, 2),
                    "naive_s": round(t_naive, 2),
                    "speedup": round(t_naive / t_batched, 1),
                    "max_abs_diff": diff,
                    "naive_s_per_pair": round(t_naive / len(pairs), 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
