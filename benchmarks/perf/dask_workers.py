"""Single-threaded segmenter steps side by side: in plain processes and in Dask LocalCluster workers.

    python -m anobench.benchmarks.perf.dask_workers [--steps 80] [--workers 2]

Each of ``--workers`` processes runs ``--steps`` quick-size segmenter training steps (64 px, width
8, batch 16, one torch thread) at the same time, in four settings: plain processes; Dask workers
with Dask's defaults; with its profiler off; and with the settings the Dask backend starts its
workers with (:func:`~anobench.benchmarks.runner.backends.local_worker_settings`: profiler off and
no ``MALLOC_TRIM_THRESHOLD_``). Prints the seconds of each process per setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

SETTINGS = ("plain", "dask-defaults", "dask-profiler-off", "backend")


def plain_processes(steps: int, workers: int) -> list[float]:
    """:func:`single_thread_steps_seconds` in ``workers`` plain single-threaded processes at once."""
    code = f"from anobench.benchmarks.runner.plan import single_thread_steps_seconds as t; print(t({steps}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(workers)
    ]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def dask_workers(steps: int, workers: int, setting: str) -> list[float]:
    """:func:`single_thread_steps_seconds` on each worker of a LocalCluster started with ``setting``."""
    from distributed import Client, LocalCluster

    from anobench.benchmarks.runner.backends import local_worker_settings, spawn_settings
    from anobench.benchmarks.runner.plan import single_thread_steps_seconds

    config: dict[str, object] = {}  # Dask's defaults: one thread per worker, its malloc setting, profiler
    if setting == "dask-profiler-off":
        config = {"distributed.worker.profile.enabled": False}
    elif setting == "backend":
        config = local_worker_settings(1)
    with spawn_settings(config), LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:  # fmt: skip
        client.wait_for_workers(workers)
        addresses = list(client.scheduler_info()["workers"])
        futures = [
            client.submit(single_thread_steps_seconds, steps, pure=False, workers=[a]) for a in addresses
        ]
        return client.gather(futures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    args = parser.parse_args(argv)
    for setting in args.settings:
        if setting == "plain":
            seconds = plain_processes(args.steps, args.workers)
        else:
            seconds = dask_workers(args.steps, args.workers, setting)
        print(f"{setting:18s} " + " ".join(f"{s:6.2f}" for s in seconds) + " s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
