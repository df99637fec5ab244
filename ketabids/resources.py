"""CPU and memory actually available to this process (affinity, Slurm/SGE/PBS, cgroups)."""

from __future__ import annotations

import os
from pathlib import Path


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).split("(")[0])
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def available_cpus() -> int:
    """CPUs this process may use: the scheduler's allocation if any, else the affinity mask."""
    for variable in ("SLURM_CPUS_PER_TASK", "NSLOTS", "PBS_NUM_PPN", "PBS_NP"):
        count = _positive_int(os.environ.get(variable))
        if count:
            return count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _cgroup_limit_bytes() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            limit = _positive_int(path.read_text().strip())
        except OSError:
            continue
        if limit and limit < 1 << 60:
            return limit
    return None


def available_memory_gb() -> float:
    """Memory this process may use in GB: Slurm's allocation, the cgroup limit, or physical memory."""
    per_node = _positive_int(os.environ.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node / 1024
    per_cpu = _positive_int(os.environ.get("SLURM_MEM_PER_CPU"))
    if per_cpu:
        return per_cpu * available_cpus() / 1024
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit_bytes()
    total = min(physical, limit) if limit else physical
    return round(total / 1024**3, 1)
