"""Training and inference speed of every registered segmenter at 64 and 256 px.

    python -m anobench.benchmarks.perf.segmenter_speed [--threads 2] [--steps 3] [--sizes 64 256]
    python -m anobench.benchmarks.perf.segmenter_speed --job [--segmenter smp-unet]

Training: optimisation steps on random images, batch 16 (data loading excluded: the pairs are
decoded once per job and held in memory, so the loop never decodes), width 64 for ``draem-unet``
(the paper's). Inference: forward passes of batch 16 in eval mode. Pretrained encoders start random
here (the weights do not change the speed).

``--job``: one segmenter job of the quick preset (its ``segmenter`` settings) on the embedded
``nut`` category, its real few-shot pairs repeated to quick's 12 per defect type as the training
pairs, under cProfile: the wall time and where it goes (reading the images, forward, backward,
optimizer, batch drawing, prediction, the metrics, ``scores.npz``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

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


#: Phases of a segmenter job: (label, file suffix(es), function name) as cProfile names them.
JOB_PHASES = (
    ("whole job", "protocol.py", "run_segmentation"),
    ("read images (pool, test split)", "training.py", "load_images"),
    ("training loop", "training.py", "train_segmenter"),
    ("  draw batches", "training.py", "draw"),
    ("  forward + loss", ("segmenters.py", "draem.py"), "loss"),
    ("  backward", "_tensor.py", "backward"),
    ("  optimizer step (Adam)", "adam.py", "step"),
    ("predict test maps", "training.py", "predict_tensor"),
    ("sort test pixels", "metrics.py", "sort"),
    ("overall metrics", "evaluation.py", "score"),
    ("  of which pixel mIoU", "metrics.py", "mean_image_iou"),
    ("per-defect metrics", "evaluation.py", "score_per_defect"),
    ("write scores.npz", "protocol.py", "save_scores"),
)


def profile_job(segmenter_name: str) -> None:
    """Run one quick-size segmenter job under cProfile and print its wall time per phase."""
    from anobench.benchmarks.config import load_config
    from anobench.benchmarks.data.datasets import read_category
    from anobench.benchmarks.data.splits import make_split
    from anobench.benchmarks.data.synth import embedded_dataset
    from anobench.downstream.protocol import run_segmentation

    config = load_config("quick")
    root = embedded_dataset(Path(config.data.cache_dir).expanduser(), config.data.synthetic_seed)
    manifest = make_split(read_category(root, "nut"), config.data.split)
    n = config.generation.n_per_defect
    pairs = {d: [p[i % len(p)] for i in range(n)] for d, p in manifest.fewshot_samples().items()}
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as out:
        profiler.enable()
        t0 = time.perf_counter()
        run_segmentation(
            [manifest.absolute(p) for p in manifest.train_good], pairs,
            [manifest.absolute(p) for p in manifest.test_good], manifest.test_samples(),
            config.segmenter, 0, out_dir=Path(out), progress=False,
            segmenter=create_segmenter(segmenter_name),
        )  # fmt: skip
        wall = time.perf_counter() - t0
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    print(f"{segmenter_name} quick-size job on nut: {wall:.1f} s wall (profiled), torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    for label, suffix, function in JOB_PHASES:
        seconds = sum(
            v[3] for (path, _, name), v in stats.items() if name == function and path.endswith(suffix)
        )
        print(f"{label:32s} {seconds:7.2f} s {100 * seconds / wall:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--pattern", default="*", help="segmenters to time (shell pattern)")
    parser.add_argument("--job", action="store_true", help="profile one quick-size job by phase")
    parser.add_argument("--segmenter", default="draem-unet", help="the segmenter of --job")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.job:
        profile_job(args.segmenter)
        return
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
