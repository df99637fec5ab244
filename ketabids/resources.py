"""CPU and memory actually available to this process: the minimum of every limit that applies.

CPUs: the scheduler's allocation (Slurm/SGE/PBS), the affinity mask (``taskset``, cpusets) and
the cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``: Docker ``--cpus``,
Kubernetes limits). Memory: Slurm's allocation, the cgroup limit and physical memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).split("(")[0])
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(root: Path) -> list[Path]:
    """This process's own cgroup folders (v2 unified and v1 hierarchies), then the root itself."""
    folders = []
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        _, controllers, relative = line.split(":", 2)
        relative = relative.lstrip("/")
        if not controllers:
            folders.append(root / relative)
        for controller in controllers.split(","):
            folders.append(root / controller / relative)
    return [*folders, root, root / "cpu", root / "cpu,cpuacct", root / "memory"]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs allowed by the cgroup quota (rounded up), or ``None`` when there is no quota."""
    limits = []
    for folder in _cgroup_dirs(root):
        v2 = (_read(folder / "cpu.max") or "").split()
        if len(v2) == 2 and v2[0] != "max" and _positive_int(v2[0]) and _positive_int(v2[1]):
            limits.append(math.ceil(int(v2[0]) / int(v2[1])))
        quota = _positive_int(_read(folder / "cpu.cfs_quota_us"))  # v1: -1 means no quota
        period = _positive_int(_read(folder / "cpu.cfs_period_us"))
        if quota and period:
            limits.append(math.ceil(quota / period))
    return min(limits) if limits else None


def _scheduler_cpus() -> int | None:
    for variable in ("SLURM_CPUS_PER_TASK", "NSLOTS", "PBS_NUM_PPN", "PBS_NP"):
        count = _positive_int(os.environ.get(variable))
        if count:
            return count
    return None


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: min(scheduler allocation, affinity mask, cgroup quota)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = os.cpu_count() or 1
    limits = [affinity, _scheduler_cpus(), cgroup_cpu_limit(cgroup_root)]
    return max(1, min(n for n in limits if n))


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes allowed by the cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    limits = []
    for folder in _cgroup_dirs(root):
        for name in ("memory.max", "memory.limit_in_bytes"):
            limit = _positive_int(_read(folder / name))
            if limit and limit < 1 << 60:  # v1 writes a huge number for "no limit"
                limits.append(limit)
    return min(limits) if limits else None


def available_memory_gb(cgroup_root: Path = CGROUP_ROOT) -> float:
    """Memory this process may use in GB: min(Slurm allocation, cgroup limit, physical memory)."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), cgroup_memory_limit(cgroup_root)]
    per_node = _positive_int(os.environ.get("SLURM_MEM_PER_NODE"))
    per_cpu = _positive_int(os.environ.get("SLURM_MEM_PER_CPU"))
    if per_node:
        limits.append(per_node * 1024**2)
    elif per_cpu:
        limits.append(per_cpu * available_cpus(cgroup_root) * 1024**2)
    return round(min(n for n in limits if n) / 1024**3, 1)
