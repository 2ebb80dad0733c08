"""anobench application: datasets, presets, the benchmark runner, reports and the CLI."""

import os

# Idle OpenMP worker threads sleep instead of spinning (libgomp's default spins for a while), so a
# run sharing the CPU with other processes does not burn their cores while waiting. Set here, before
# the CLI or anything else of the application imports torch; an explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
