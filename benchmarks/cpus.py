"""How many CPUs this process may really use (affinity and cgroup quota), read without importing torch.

Example:
    >>> from anobench.benchmarks.cpus import usable_cpus
    >>> usable_cpus() >= 1
    True
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs a cgroup quota allows (v2 ``cpu.max``, else v1 ``cpu/cpu.cfs_*``); None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or int(period) <= 0:
        return None
    return int(quota) / int(period)


def affinity_cpus() -> int:
    """CPUs the scheduler may run this process on (all of the host's, in a container with a quota)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (containers, CI).

    ``os.cpu_count()`` counts the host's CPUs: in a container limited to 2 of 64 it would start 64
    workers (or 32 torch threads in each of 2), each slowed by the others.
    """
    count = affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)
