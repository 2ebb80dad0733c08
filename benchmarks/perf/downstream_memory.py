"""Peak memory (max RSS) of the paper-size segmenter job, by part, one subprocess per variant.

    python -m anobench.benchmarks.perf.downstream_memory [--pairs 1500] [--steps 2]

Variants (256 px, width 64, batch 16, CPU): ``pool`` holds the training pool as
:class:`~anobench.downstream.training.TrainingPool` does (uint8 images, bool masks: ``--pairs``
generated pairs plus 200 normals) and draws batches; ``steps`` runs ``--steps`` training steps on
random batches; ``job`` does both, as one segmenter job; ``job-batch8`` the same at batch 8. Peak
RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of each subprocess.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORK = """
import json, resource, numpy as np, torch
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss
from anobench.downstream.training import TrainingPool
size, width, batch, pairs, steps, pool_on, steps_on = {args}
rng = np.random.default_rng(0)
images, masks = None, None
if pool_on:
    pool = TrainingPool.__new__(TrainingPool)  # the pool's tensors without writing image files
    pool.normals = torch.randint(0, 256, (200, 3, size, size), dtype=torch.uint8)
    pool.defects = ["a", "b", "c"]
    shape = (pairs // 3, 3, size, size)
    pool.images = {{d: torch.randint(0, 256, shape, dtype=torch.uint8) for d in pool.defects}}
    pool.masks = {{d: torch.rand(pairs // 3, size, size) > 0.9 for d in pool.defects}}
    images, masks = pool.draw(batch, 0.5, rng)
if steps_on:
    model = DiscriminativeUNet(base_width=width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(steps):
        if pool_on:
            images, masks = pool.draw(batch, 0.5, rng)
        else:
            images, masks = torch.rand(batch, 3, size, size), (torch.rand(batch, size, size) > 0.9).float()
        loss = focal_loss(model(images), masks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""

VARIANTS = {  # name: (batch, pool, steps)
    "pool": (16, True, False),
    "steps": (16, False, True),
    "job": (16, True, True),
    "job-batch8": (8, True, True),
}


def peak_mb(size: int, width: int, batch: int, pairs: int, steps: int, pool: bool, train: bool) -> float:
    """Max RSS in MB of one subprocess running the variant."""
    args = (size, width, batch, pairs, steps, pool, train)
    code = WORK.format(args=repr(args))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    for name in args.only or VARIANTS:
        batch, pool, train = VARIANTS[name]
        mb = peak_mb(args.size, args.width, batch, args.pairs, args.steps, pool, train)
        print(
            f"{name:10s} {args.size}px width {args.width} batch {batch} pairs {args.pairs if pool else 0}: "
            f"peak RSS {mb:7.0f} MB"
        )


if __name__ == "__main__":
    main()
