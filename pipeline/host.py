"""What this host really gives the pipeline: CPUs and memory, from Lambda's settings or the
cgroup limits of the container or service, never just what the hardware shows."""

from __future__ import annotations

import os

MIB = 1024 * 1024


def available_cpus(
    env: dict[str, str] | None = None, cgroup_root: str = "/sys/fs/cgroup", cgroup_membership: str = "/proc/self/cgroup"
) -> int:
    """CPUs this process may really use: Lambda's share from its memory size; elsewhere the
    affinity mask, lowered to a container's CPU quota (a 2-CPU container on a 64-core host
    must not start 64 encoders that then take turns)."""
    env = dict(os.environ) if env is None else env
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if memory and memory.isdigit():
        return max(1, min(6, int(memory) // 1769))  # 1,769 MB = 1 vCPU; 10,240 MB = 6
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, cgroup_membership)
    if quota is not None:
        cpus = min(cpus, int(quota))  # whole CPUs: a 1.5-CPU quota runs 1 encoder beside the parent
    return max(1, cpus)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> float | None:
    """The tightest CPU quota on this process, in CPUs: cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, read in this process's own cgroup and every
    ancestor (a container sees its cgroup at ``root``; a systemd service with ``CPUQuota=`` sits
    below it; a parent's limit binds its children). ``None``: no limit found."""
    v2, v1 = _membership(membership, "cpu")
    found = [_v2_quota(folder) for folder in _ancestors(root, v2)]
    found += [_v1_quota(folder) for mount in ("cpu", "cpu,cpuacct") for folder in _ancestors(f"{root}/{mount}", v1)]
    limits = [q for q in found if q is not None]
    return min(limits) if limits else None


def _membership(membership: str, v1_controller: str) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in the v1 hierarchy of a controller."""
    v2, v1 = "/", "/"
    try:
        with open(membership) as fh:
            for line in fh:
                hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
                if hierarchy == "0" and not controllers:
                    v2 = path
                elif v1_controller in controllers.split(","):
                    v1 = path
    except (OSError, ValueError):
        pass
    return v2, v1


def _ancestors(base: str, path: str) -> list[str]:
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return ["/".join([base, *parts[:n]]) for n in range(len(parts), -1, -1)]


def _v2_quota(folder: str) -> float | None:
    try:
        with open(f"{folder}/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: str) -> float | None:
    try:
        with open(f"{folder}/cpu.cfs_quota_us") as q, open(f"{folder}/cpu.cfs_period_us") as pr:
            quota_us, period_us = int(q.read()), int(pr.read())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _ancestor_values(root: str, membership: str, v2_file: str, v1_controller: str, v1_file: str) -> list[str]:
    """The contents of a cgroup file in this process's own cgroup and every ancestor (v2 and v1)."""
    v2, v1 = _membership(membership, v1_controller)
    found = []
    for folder, name in [(f, v2_file) for f in _ancestors(root, v2)] + [
        (f, v1_file) for f in _ancestors(f"{root}/{v1_controller}", v1)
    ]:
        try:
            with open(f"{folder}/{name}") as fh:
                found.append(fh.read().strip())
        except OSError:
            continue
    return found


def cgroup_memory_limit(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """The tightest memory limit on this process in bytes (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), or ``None``. v1 reports "no limit" as a huge number."""
    limits = []
    for value in _ancestor_values(root, membership, "memory.max", "memory", "memory.limit_in_bytes"):
        if value.isdigit() and int(value) < 1 << 60:
            limits.append(int(value))
    return min(limits) if limits else None


def physical_memory(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(
    env: dict[str, str] | None = None, cgroup_root: str = "/sys/fs/cgroup", cgroup_membership: str = "/proc/self/cgroup"
) -> int:
    """Bytes this process tree may use: Lambda's configured memory, else the cgroup limit, else
    physical memory (the smaller of the last two); 2 GiB if nothing can be read."""
    env = dict(os.environ) if env is None else env
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory.isdigit():
        return int(memory) * MIB
    found = [m for m in (cgroup_memory_limit(cgroup_root, cgroup_membership), physical_memory()) if m]
    return min(found) if found else 2048 * MIB
