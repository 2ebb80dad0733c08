"""Torch CPU work next to a competing busy process: how idle OpenMP threads wait.

    python -m anobench.benchmarks.perf.threads [--steps 4] [--repeats 2] [--variants PASSIVE spin-30000]

Each variant runs a few segmenter training steps (quick size: 128 px, width 16, batch 16) in a
fresh subprocess with its OpenMP environment, alone and with one busy-looping competitor process,
interleaved; prints min/median seconds and the slowdown (with competitor / alone) per variant.
``ACTIVE`` spins forever, ``PASSIVE`` sleeps at once, ``spin-N`` spins ``GOMP_SPINCOUNT=N``
iterations then sleeps (libgomp's default without a policy is 300000: ``spin-300000``). The CLI's
choice is in ``anobench/benchmarks/__init__.py``. On a machine already shared with other work the
numbers are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

WORK = """
import time, torch
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss
torch.manual_seed(0)
model = DiscriminativeUNet(base_width=16)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
x, m = torch.rand(16, 3, 128, 128), (torch.rand(16, 128, 128) > 0.95).float()
def step():
    loss = focal_loss(model(x), m); opt.zero_grad(); loss.backward(); opt.step()
step()
t0 = time.perf_counter()
for _ in range({steps}):
    step()
print(time.perf_counter() - t0)
"""


VARIANTS = ("ACTIVE", "PASSIVE", "spin-300000", "spin-30000", "spin-3000")


def variant_name(text: str) -> str:
    """``ACTIVE``, ``PASSIVE`` or ``spin-N`` (argparse type)."""
    if text in ("ACTIVE", "PASSIVE") or (text.startswith("spin-") and text.removeprefix("spin-").isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use ACTIVE, PASSIVE or spin-N (N iterations)")


def variant_env(variant: str) -> dict[str, str]:
    """The process environment of ``variant``: a wait policy, or a spin count and no policy."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if variant.startswith("spin-"):
        return {**env, "GOMP_SPINCOUNT": variant.removeprefix("spin-")}
    return {**env, "OMP_WAIT_POLICY": variant}


def run_once(variant: str, steps: int, competitor: bool) -> float:
    """Seconds for ``steps`` training steps in a subprocess under ``variant``."""
    env = variant_env(variant)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", WORK.format(steps=steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", type=variant_name, default=list(VARIANTS), help="ACTIVE, PASSIVE or spin-N"
    )
    args = parser.parse_args()
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.repeats):
        for variant in args.variants:
            for competitor in (False, True):
                times.setdefault((variant, competitor), []).append(run_once(variant, args.steps, competitor))
    for variant in args.variants:
        alone, busy = times[(variant, False)], times[(variant, True)]
        print(
            f"{variant:11s}: alone min {min(alone):.2f} s median {statistics.median(alone):.2f} s | "
            f"with a busy competitor min {min(busy):.2f} s median {statistics.median(busy):.2f} s | "
            f"slowdown {min(busy) / min(alone):.2f}x (min) "
            f"{statistics.median(busy) / statistics.median(alone):.2f}x (median)"
        )


if __name__ == "__main__":
    main()
