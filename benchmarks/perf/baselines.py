"""Sampling speed of the rule-based baselines (pairs per second, one process).

Run: ``python -m anobench.benchmarks.perf.baselines [--size 256] [--n 50]``. Builds the embedded dataset in a
temporary folder, fits each baseline on the ``nut`` (object) and ``brick`` (texture) few-shot
splits and times ``n`` pairs of one defect type, images resized to ``--size``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.data.synth import build_synthetic_dataset
from anobench.benchmarks.runner.stages import fewshot_set
from anobench.benchmarks.tables import format_table
from anobench.generation import create_generator

BASELINES = ("real-fewshot", "crop-paste", "perlin", "cutpaste-scar", "nsa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--n", type=int, default=50, help="pairs timed per generator and category")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = build_synthetic_dataset(tmp, seed=0, categories=["nut", "brick"])
        for category in ("nut", "brick"):
            fewshot = fewshot_set(make_split(read_category(root, category), "strict"))
            for name in BASELINES:
                gen = create_generator(name, image_size=args.size)
                t0 = time.perf_counter()
                gen.fit(fewshot)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in gen.sample(fewshot.defects[0], args.n, seed=0):
                    pass
                per_pair = (time.perf_counter() - t0) / args.n
                rows.append({"category": category, "generator": name, "size": args.size, "fit_s": fit_s,
                             "ms_per_pair": 1000 * per_pair, "pairs_per_s": 1 / per_pair})  # fmt: skip
    print(format_table(rows, digits=1))


if __name__ == "__main__":
    main()
