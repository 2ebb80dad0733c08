"""Peak memory (max RSS) and time per step of the paper-size segmenter job, per memory knob.

    python -m anobench.benchmarks.perf.downstream_memory [--pairs 1500] [--steps 2] [--only ckpt]

Each variant runs in a fresh subprocess (256 px, width 64, batch 16, CPU): it holds the training pool
as :class:`~anobench.downstream.training.TrainingPool` does (uint8 images, bool masks: ``--pairs``
generated pairs of three defect types plus 200 normals), runs ``--steps`` training steps of
:func:`~anobench.downstream.training.train_step` on batches drawn from it, then scores ``--test``
images with :func:`~anobench.downstream.training.predict_tensor` (``eval_batch_size``), as one
segmenter job does. ``pool`` holds the pool only. Peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the subprocess; s/step is the fastest step (the
first one allocates). The variants differ only in the ``segmenter.*`` fields they set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORK = """
import json, resource, time, numpy as np, torch
from anobench.downstream.segmenters import create_segmenter
from anobench.downstream.training import PairSet, SegmenterConfig, TrainingPool, predict_tensor, train_step
size, width, pairs, steps, n_test, fields = {args}
config = SegmenterConfig(image_size=size, base_width=width, device="cpu", **(fields or {{}}))
pool = TrainingPool.__new__(TrainingPool)  # the pool's tensors without writing image files
pool.normals = torch.randint(0, 256, (200, 3, size, size), dtype=torch.uint8)
pool.generated, pool.real = PairSet.__new__(PairSet), PairSet.__new__(PairSet)
pool.real.defects, pool.generated.defects = [], ["a", "b", "c"]
shape = (pairs // 3, 3, size, size)
pool.generated.images = {{d: torch.randint(0, 256, shape, dtype=torch.uint8) for d in "abc"}}
mask_shape = (pairs // 3, size, size)
pool.generated.masks = {{d: torch.randint(0, 10, mask_shape, dtype=torch.uint8) == 0 for d in "abc"}}
pool.defects = pool.generated.defects
rng = np.random.default_rng(0)
times = []
if fields is not None:
    segmenter = create_segmenter("draem-unet")
    torch.manual_seed(0)
    model = segmenter.build(config)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    for _ in range(steps):
        images, masks = pool.draw(config.batch_size, config.normal_fraction, rng)
        t0 = time.perf_counter()
        train_step(model, segmenter, optimizer, images, masks, config)
        times.append(time.perf_counter() - t0)
    test = torch.randint(0, 256, (n_test, 3, size, size), dtype=torch.uint8)
    predict_tensor(model, test, config.eval_batch_size, config.pool_kernel)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"peak_mb": peak, "s_per_step": min(times) if times else None}}))
"""

VARIANTS: dict[str, dict[str, object] | None] = {  # name: segmenter.* fields (None: the pool alone)
    "pool": None,
    "base": {},
    "ckpt": {"gradient_checkpointing": True},
    "channels-last": {"channels_last": True},
    "ckpt+channels-last": {"gradient_checkpointing": True, "channels_last": True},
    "accum2": {"grad_accum": 2},
    "ckpt+accum2": {"gradient_checkpointing": True, "grad_accum": 2},
    "ckpt+accum2+eval8": {"gradient_checkpointing": True, "grad_accum": 2, "eval_batch_size": 8},
    "ckpt+channels-last+accum2": {"gradient_checkpointing": True, "channels_last": True, "grad_accum": 2},
    "ckpt+accum4": {"gradient_checkpointing": True, "grad_accum": 4},
    "ckpt+accum4+eval4": {"gradient_checkpointing": True, "grad_accum": 4, "eval_batch_size": 4},
    "ckpt+offload": {"gradient_checkpointing": True, "offload_activations": True},
    "ckpt+chunk2": {"gradient_checkpointing": True, "unit_chunk": 2},
    "ckpt+chunk2+offload+eval4": {
        "gradient_checkpointing": True,
        "unit_chunk": 2,
        "offload_activations": True,
        "eval_batch_size": 4,
    },
    "ckpt+channels-last+accum4+eval4": {
        "gradient_checkpointing": True,
        "channels_last": True,
        "grad_accum": 4,
        "eval_batch_size": 4,
    },
}


def measure(
    size: int, width: int, pairs: int, steps: int, n_test: int, fields: dict[str, object] | None
) -> dict[str, float | None]:
    """Peak RSS (MB) and fastest step (s) of one subprocess running the variant."""
    code = WORK.format(args=repr((size, width, pairs, steps, n_test, fields)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"variant {fields} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--test", type=int, default=150, help="test images scored after training")
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    print(f"{args.size} px, width {args.width}, batch 16, {args.pairs} pairs + 200 normals, {args.test} test")
    print(f"{'variant':20s} {'peak RSS MB':>12s} {'s/step':>8s}")
    for name in args.only or VARIANTS:
        result = measure(args.size, args.width, args.pairs, args.steps, args.test, VARIANTS[name])
        seconds = result["s_per_step"]
        shown = f"{seconds:8.2f}" if seconds is not None else f"{'-':>8s}"
        print(f"{name:20s} {result['peak_mb']:12.0f} {shown}", flush=True)


if __name__ == "__main__":
    main()
