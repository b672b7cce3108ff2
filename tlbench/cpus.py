"""How many CPUs this process really has, and torch threads that do not spin against each other.

No torch import at module level: the CLI calls ``quiet_threads`` before anything imports torch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional


#: Set before torch is imported (its OpenMP runtime reads it once): idle intra-op threads sleep
#: instead of spinning. Several torch processes on a few cores (concurrent drivers on one results
#: folder, Ray workers on one node, CI) otherwise burn each other's CPU time waiting; see
#: benchmarks/test_shared_cpu.py. A value the user set is kept.
QUIET_THREADS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def quiet_threads() -> None:
    """Make torch's thread pools wait passively (only effective before torch is imported)."""
    for name, value in QUIET_THREADS_ENV.items():
        os.environ.setdefault(name, value)


def cpu_quota_v2(cpu_max: str) -> Optional[float]:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"200000 100000"``: 2.0; ``"max 100000"``: None)."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def cpu_quota_v1(quota_us: str, period_us: str) -> Optional[float]:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: no limit)."""
    quota, period = int(quota_us), int(period_us)
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> Optional[float]:
    """The tightest CPU quota on this process's cgroup and its ancestors (containers, Kubernetes
    limits, Slurm), or None without one. Unreadable files count as no limit."""
    limits = []
    with contextlib.suppress(OSError, ValueError):
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0":  # v2: cpu.max in the unified tree
                folder = root / path.lstrip("/")
                for parent in (folder, *folder.parents):
                    if parent == root.parent:
                        break
                    with contextlib.suppress(OSError, ValueError):
                        limits.append(cpu_quota_v2((parent / "cpu.max").read_text()))
            elif "cpu" in controllers.split(","):
                folder = root / "cpu" / path.lstrip("/")
                with contextlib.suppress(OSError, ValueError):
                    limits.append(cpu_quota_v1((folder / "cpu.cfs_quota_us").read_text(),
                                               (folder / "cpu.cfs_period_us").read_text()))
    limits = [q for q in limits if q]
    return min(limits) if limits else None


def usable_cpus() -> int:
    """CPUs this process can really use: its affinity mask (taskset, Slurm, a Ray worker), capped
    by its cgroup's CPU quota (a container limited to 2 CPUs on a 64-core host sees 64 cores)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota)))  # 1.5 CPUs: one thread, not two fighting for 1.5
    return max(1, count)


def size_threads(threads: Optional[int] = None) -> int:
    """Give torch ``threads`` intra-op threads (default: the usable CPUs; torch's own default
    counts the host's cores, not the container's share); returns the number set."""
    import torch

    threads = threads or usable_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
