"""Training and inference speed of every registered segmenter at 64 and 256 px.

    python -m anobench.benchmarks.perf.segmenter_speed [--threads 2] [--steps 3] [--sizes 64 256]

Training: optimisation steps on random images, batch 16 (data loading excluded: the pairs are
decoded once per job and held in memory, so the loop never decodes), width 64 for ``draem-unet``
(the paper's). Inference: forward passes of batch 16 in eval mode. Pretrained encoders start random
here (the weights do not change the speed).
"""

from __future__ import annotations

import argparse
import time

import torch

from anobench.benchmarks.perf.downstream_speed import segmenter_throughput
from anobench.downstream.segmenters import Segmenter, create_segmenter, list_segmenters
from anobench.downstream.training import SegmenterConfig, resolve_device


@torch.no_grad()
def inference_throughput(
    segmenter: Segmenter, size: int, batch: int, steps: int, device: torch.device
) -> float:
    """Images per second of eval-mode forward passes."""
    model = segmenter.build(SegmenterConfig(image_size=size)).to(device).eval()
    images = torch.rand(batch, 3, size, size, device=device)
    model(images)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def offline(name: str) -> Segmenter:
    """The segmenter with its pretrained weights switched off (same network, no weights file read)."""
    return create_segmenter(name, **({"encoder_weights": None} if name.startswith("smp-") else {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--pattern", default="*", help="segmenters to time (shell pattern)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device={device} torch threads={torch.get_num_threads()} batch={args.batch}")
    print(f"{'segmenter':20s} {'px':>4s} {'train img/s':>12s} {'infer img/s':>12s}")
    for name in list_segmenters(args.pattern):
        for size in args.sizes:
            train, _ = segmenter_throughput(size, 64, args.batch, args.steps, device, offline(name))
            infer = inference_throughput(offline(name), size, args.batch, args.steps, device)
            print(f"{name:20s} {size:4d} {train:12.2f} {infer:12.2f}", flush=True)


if __name__ == "__main__":
    main()
