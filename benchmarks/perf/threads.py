"""Torch CPU work next to a competing busy process: how idle OpenMP threads wait.

    python -m anobench.benchmarks.perf.threads [--steps 4] [--repeats 2] [--variants PASSIVE spin-3000]
        [--workloads segmenter offline-base]

Each variant runs a few training steps of each workload in a fresh subprocess with its OpenMP
environment, alone and with one busy-looping competitor process, interleaved; prints min/median
seconds and the slowdown (with competitor / alone) per workload and variant. Workloads, at the
``quick`` preset's sizes: ``segmenter`` (DRAEM's discriminative U-Net, 64 px, width 8, batch 16)
and ``offline-base`` (the offline DualAnoDiff base UNet on its VAE's latents, batch 8);
``segmenter-128`` is the earlier, larger segmenter step (128 px, width 16).
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

SEGMENTER_STEP = """
import time, torch
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss
torch.manual_seed(0)
model = DiscriminativeUNet(base_width={width})
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
x, m = torch.rand(16, 3, {size}, {size}), (torch.rand(16, {size}, {size}) > 0.95).float()
def step():
    loss = focal_loss(model(x), m); opt.zero_grad(); loss.backward(); opt.step()
"""

OFFLINE_BASE_STEP = """
import time, torch, torch.nn.functional as F
from anobench.generation.dualanodiff.components import build_offline_components
parts = build_offline_components(64, (32, 64), (8, 16, 16), 32, 1)
unet, vae = parts.unet, parts.vae
opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
torch.manual_seed(0)
x, text = torch.rand(8, 3, 64, 64) * 2 - 1, torch.randn(8, 77, 32)
def step():
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    noise = torch.randn_like(z)
    loss = F.mse_loss(unet(z + noise, torch.randint(0, 1000, (8,)), text).sample, noise)
    opt.zero_grad(); loss.backward(); opt.step()
"""

TIMING = """
step()
t0 = time.perf_counter()
for _ in range({steps}):
    step()
print(time.perf_counter() - t0)
"""

#: Setup code defining ``step()`` per workload (sizes as the ``quick`` preset runs them).
WORKLOADS = {
    "segmenter": SEGMENTER_STEP.replace("{width}", "8").replace("{size}", "64"),
    "offline-base": OFFLINE_BASE_STEP,
    "segmenter-128": SEGMENTER_STEP.replace("{width}", "16").replace("{size}", "128"),
}


VARIANTS = ("ACTIVE", "PASSIVE", "spin-300000", "spin-30000", "spin-10000", "spin-3000", "spin-1000")


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


def run_once(workload: str, variant: str, steps: int, competitor: bool) -> float:
    """Seconds for ``steps`` training steps of ``workload`` in a subprocess under ``variant``."""
    env = variant_env(variant)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", WORKLOADS[workload] + TIMING.format(steps=steps)],
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
    parser.add_argument(
        "--workloads", nargs="+", choices=list(WORKLOADS), default=["segmenter", "offline-base"]
    )
    args = parser.parse_args()
    times: dict[tuple[str, str, bool], list[float]] = {}
    for _ in range(args.repeats):
        for workload in args.workloads:
            for variant in args.variants:
                for competitor in (False, True):
                    seconds = run_once(workload, variant, args.steps, competitor)
                    times.setdefault((workload, variant, competitor), []).append(seconds)
    for workload in args.workloads:
        for variant in args.variants:
            alone, busy = times[(workload, variant, False)], times[(workload, variant, True)]
            print(
                f"{workload:13s} {variant:11s}: "
                f"alone min {min(alone):.2f} s median {statistics.median(alone):.2f} s | "
                f"with a busy competitor min {min(busy):.2f} s median {statistics.median(busy):.2f} s | "
                f"slowdown {min(busy) / min(alone):.2f}x (min) "
                f"{statistics.median(busy) / statistics.median(alone):.2f}x (median)"
            )


if __name__ == "__main__":
    main()
