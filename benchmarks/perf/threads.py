"""Torch CPU work next to a competing busy process: OpenMP wait policy ACTIVE vs PASSIVE.

    python -m anobench.benchmarks.perf.threads [--steps 4] [--repeats 2]

Each variant runs a few segmenter training steps (quick size: 128 px, width 16, batch 16) in a
fresh subprocess with ``OMP_WAIT_POLICY`` set, alone and with one busy-looping competitor process,
interleaved; prints min/median seconds and the slowdown (with competitor / alone) per policy. The
CLI defaults to PASSIVE (``anobench/benchmarks/__init__.py``). On a machine already shared with
other work the numbers are noisy: compare the ratios, not the seconds.
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


def run_once(policy: str, steps: int, competitor: bool) -> float:
    """Seconds for ``steps`` training steps in a subprocess under ``policy``."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
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
    args = parser.parse_args()
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.repeats):
        for policy in ("ACTIVE", "PASSIVE"):
            for competitor in (False, True):
                times.setdefault((policy, competitor), []).append(run_once(policy, args.steps, competitor))
    for policy in ("ACTIVE", "PASSIVE"):
        alone, busy = times[(policy, False)], times[(policy, True)]
        print(
            f"{policy:7s}: alone min {min(alone):.2f} s median {statistics.median(alone):.2f} s | "
            f"with a busy competitor min {min(busy):.2f} s median {statistics.median(busy):.2f} s | "
            f"slowdown {min(busy) / min(alone):.2f}x (min) "
            f"{statistics.median(busy) / statistics.median(alone):.2f}x (median)"
        )


if __name__ == "__main__":
    main()
