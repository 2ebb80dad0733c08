"""Scoring one downstream job: overall metrics, per-defect metrics and ``scores.npz``, old vs new.

    python -m anobench.benchmarks.perf.evaluation_speed [--sizes 256 512] [--n-good 40] [--repeats 3]

``old`` is ``downstream/metrics.py`` as of ``--old-rev`` (read with ``git show``), which sorts the
test pixels once per call (overall, once per defect, once more for the PRO curve of ``scores.npz``);
``new`` sorts them once (``HeldOutSplit.sort_pixels``), restricts the sorted pixels to each defect's
subset and computes only ``PER_DEFECT_KEYS`` there. Both write ``scores.npz`` with today's
``save_scores`` (PRO curve thinned, a pixel sample), as a job does. Both run interleaved in this
process on the same random maps (rectangle defects, four defect types); the script checks the values
agree and prints min/median seconds and the ratio. Run it from the repository (``git`` must find
``--old-rev``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from anobench.downstream.evaluation import GOOD, PER_DEFECT_KEYS, HeldOutSplit
from anobench.downstream.protocol import save_scores

DEFECTS = ("crack", "hole", "scratch", "stain")


def random_split(size: int, n_good: int, n_per_defect: int, seed: int = 0) -> tuple[HeldOutSplit, np.ndarray]:
    """A split with ``n_good`` good images and ``n_per_defect`` images per defect, plus random maps."""
    rng = np.random.default_rng(seed)
    defects = [GOOD] * n_good + [d for d in DEFECTS for _ in range(n_per_defect)]
    masks = np.zeros((len(defects), size, size), dtype=bool)
    for i in range(n_good, len(defects)):
        h, w = rng.integers(size // 32, size // 4, 2)
        y, x = rng.integers(0, size - max(h, w), 2)
        masks[i, y : y + h, x : x + w] = True
    maps = (rng.random(masks.shape, dtype=np.float32) * 0.7 + 0.4 * masks).astype(np.float32)
    names = [f"{d}/{i:03d}" for i, d in enumerate(defects)]
    return HeldOutSplit(torch.empty(0), masks, defects, names), maps


def old_metrics_module(rev: str) -> ModuleType:
    """``anobench.downstream.metrics`` as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parents[2]
    source = subprocess.run(
        ["git", "show", f"{rev}:downstream/metrics.py"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    module = ModuleType("old_metrics")
    exec(compile(source, f"{rev}:downstream/metrics.py", "exec"), module.__dict__)  # noqa: S102
    return module


class OldCurve:
    """The old ``scores.npz`` curve: ``save_scores`` asks for it, the old code sorted the pixels again."""

    def __init__(self, old: ModuleType, maps: np.ndarray, masks: np.ndarray) -> None:
        self.old, self.maps, self.masks = old, maps, masks

    def pro_curve(self, fpr_limit: float) -> tuple[np.ndarray, np.ndarray]:
        return self.old.pro_curve(self.maps, self.masks)  # the whole curve; save_scores keeps FPR <= limit


def score_old(
    old: ModuleType, split: HeldOutSplit, maps: np.ndarray, scores: np.ndarray, out: Path
) -> tuple[dict, dict]:
    """Before: every call sorts the pixels it scores (what ``HeldOutSplit`` and ``save_scores`` ran).

    The per-defect rows computed every metric and kept ``PER_DEFECT_KEYS``.
    """
    labels, defects = split.labels, np.array(split.defects)
    overall = old.segmentation_metrics(maps, split.masks, scores, labels=labels)
    per_defect = {}
    for defect in sorted(set(split.defects) - {GOOD}):
        keep = (defects == defect) | (defects == GOOD)
        metrics = old.segmentation_metrics(maps[keep], split.masks[keep], scores[keep], labels=labels[keep])
        per_defect[defect] = {key: metrics[key] for key in PER_DEFECT_KEYS}
    save_scores(out / "old.npz", split, maps, scores, pixels=OldCurve(old, maps, split.masks))
    return overall, per_defect


def score_new(split: HeldOutSplit, maps: np.ndarray, scores: np.ndarray, out: Path) -> tuple[dict, dict]:
    """After: one sort, restricted to each defect's subset; the per-defect rows compute only their keys."""
    pixels = split.sort_pixels(maps)
    overall = split.score(maps, scores, pixels=pixels)
    per_defect = split.score_per_defect(maps, scores, pixels)
    save_scores(out / "new.npz", split, maps, scores, pixels=pixels)
    return overall, per_defect


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two (nested) metric dicts with the same keys."""
    if isinstance(a, dict):
        return max(max_difference(a[k], b[k]) for k in a)
    return abs(a - b)


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--n-good", type=int, default=40)
    parser.add_argument("--n-per-defect", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-rev", default="6042db7", help="git revision of the old metrics.py")
    args = parser.parse_args()
    old = old_metrics_module(args.old_rev)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            split, maps = random_split(size, args.n_good, args.n_per_defect)
            scores = maps.reshape(len(maps), -1).max(axis=1)
            results = {}
            times = {}
            runs = {
                "old": partial(score_old, old, split, maps, scores, Path(tmp)),
                "new": partial(score_new, split, maps, scores, Path(tmp)),
            }
            for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
                for name, fn in runs.items():
                    t, results[name] = timed(fn, 1)
                    times.setdefault(name, []).extend(t)
            old_npz, new_npz = np.load(Path(tmp) / "old.npz"), np.load(Path(tmp) / "new.npz")
            npz_diff = max(float(np.max(np.abs(old_npz[k] - new_npz[k]))) for k in ("pro_fpr", "pro_pro"))
            diff = max(max_difference(results["old"][i], results["new"][i]) for i in (0, 1))
            mins = {k: min(v) for k, v in times.items()}
            meds = {k: statistics.median(v) for k, v in times.items()}
            print(
                f"{size}px, {len(maps)} images: old min {mins['old']:.2f} s median {meds['old']:.2f} s | "
                f"new min {mins['new']:.2f} s median {meds['new']:.2f} s | ratio old/new "
                f"{mins['old'] / mins['new']:.2f} (min) {meds['old'] / meds['new']:.2f} (median) | "
                f"max |metric diff| {diff:.1e}, PRO curve diff {npz_diff:.1e}"
            )


if __name__ == "__main__":
    main()
