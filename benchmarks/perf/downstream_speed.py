"""Downstream speed: segmenter training throughput, metric time, our AU-PRO vs anomalib's.

    python -m anobench.benchmarks.perf.downstream_speed [--steps 3] [--n-test 100]

Segmenter: a few optimisation steps on random images (data loading excluded) at the quick preset
size (128 px, width 16, batch 16) and at paper size (256 px, width 64, batch 16); per-epoch time
is extrapolated to 500 samples. Metrics: every segmentation metric on ``--n-test`` random 256x256
maps with rectangle masks; AU-PRO alone against anomalib's ``_AUPRO`` on identical inputs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from anobench.downstream import metrics as M
from anobench.downstream.segmenters import DEFAULT_SEGMENTER, Segmenter, create_segmenter
from anobench.downstream.training import SegmenterConfig, resolve_device


def segmenter_throughput(
    size: int, width: int, batch: int, steps: int, device: torch.device, segmenter: Segmenter | None = None
) -> tuple[float, float]:
    """Training images per wall-clock second and per CPU second (``segmenter``: default draem-unet)."""
    segmenter = segmenter or create_segmenter(DEFAULT_SEGMENTER)
    model = segmenter.build(SegmenterConfig(image_size=size, base_width=width)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 3, size, size, device=device)
    masks = (torch.rand(batch, size, size, device=device) > 0.95).float()

    def step() -> None:
        loss = segmenter.loss(model, images, masks, 2.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0), steps * batch / (time.process_time() - c0)


def test_case(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n // 3, n):
        y, x = rng.integers(0, size - 40, 2)
        masks[i, y : y + rng.integers(5, 40), x : x + rng.integers(5, 40)] = True
    maps = (rng.random(masks.shape) * 0.7 + 0.4 * masks).astype(np.float32)
    return maps, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device={device} torch threads={torch.get_num_threads()}")
    for name, size, width in (("quick", 128, 16), ("paper", 256, 64)):
        ips, per_cpu_s = segmenter_throughput(size, width, 16, args.steps, device)
        print(
            f"segmenter {name:5s} {size}px width {width}: {ips:7.2f} images/s ({per_cpu_s:.2f} per CPU s) "
            f"-> {500 / ips:7.1f} s per 500-sample epoch"
        )

    maps, masks = test_case(args.n_test, 256)
    scores = maps.reshape(len(maps), -1).max(1)
    t0 = time.perf_counter()
    out = M.segmentation_metrics(maps, masks, scores)
    print(f"all 7 segmentation metrics, {args.n_test} x 256x256: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    ours = M.aupro(maps, masks)
    t_ours = time.perf_counter() - t0

    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=0.3)
    t0 = time.perf_counter()
    metric.update(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.float32)))
    theirs = float(metric.compute())
    t_theirs = time.perf_counter() - t0
    print(f"AU-PRO ours {ours:.6f} in {t_ours:.2f} s; anomalib _AUPRO {theirs:.6f} in {t_theirs:.2f} s; "
          f"|diff| {abs(ours - theirs):.2e}; time ratio ours/anomalib {t_ours / t_theirs:.2f}")  # fmt: skip
    print(f"(pixel_aupro inside segmentation_metrics: {out[M.PIXEL_AUPRO]:.6f})")


if __name__ == "__main__":
    main()
