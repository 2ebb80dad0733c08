"""anobench application: datasets, presets, the benchmark runner, reports and the CLI."""

import os

# Idle OpenMP worker threads sleep instead of spinning (libgomp's default spins for a while), so a
# run sharing the CPU with other processes does not burn their cores while waiting. Set here, before
# the CLI or anything else of the application imports torch; an explicit setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch starts one thread per visible core; in a container whose cgroup quota allows fewer CPUs than
# it sees, that many threads would time-slice on the allowed ones. An explicit setting is kept.
if "OMP_NUM_THREADS" not in os.environ:
    from anobench.benchmarks.cpus import affinity_cpus, usable_cpus

    if usable_cpus() < affinity_cpus():
        os.environ["OMP_NUM_THREADS"] = str(usable_cpus())

__version__ = "0.1.0"
