"""The host facts the encoder count and the memory budget come from (pipeline/host.py): Lambda's
memory size, the CPUs this process may use, a container's cgroup CPU quota."""

from __future__ import annotations

import os

import pytest

from pipeline import host


def test_available_cpus_follows_lambda_memory():
    assert host.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}) == 1
    assert host.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}) == 2
    assert host.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}) == 5
    assert host.available_cpus({}) == min(len(os.sched_getaffinity(0)), int(host.cgroup_cpu_quota() or 10**6))


def _cgroup(tmp_path, files: dict[str, str], membership: str = "0::/\n") -> tuple[str, str]:
    """A cgroup mount under tmp_path (``files`` relative to it) and a /proc/self/cgroup beside it."""
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text + "\n")
    (tmp_path / "fs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup").write_text(membership)
    return str(tmp_path / "fs"), str(tmp_path / "cgroup")


@pytest.mark.parametrize(
    ("files", "membership", "quota"),
    [
        ({"cpu.max": "max 100000"}, "0::/\n", None),  # cgroup v2, unlimited
        ({"cpu.max": "150000 100000"}, "0::/\n", 1.5),  # a container with --cpus=1.5
        # a systemd service with CPUQuota=50% (its cgroup below the mount's root)
        ({"system.slice/x.service/cpu.max": "50000 100000"}, "0::/system.slice/x.service\n", 0.5),
        # a parent's limit binds the child below it
        ({"a/cpu.max": "100000 100000", "a/b/cpu.max": "max 100000"}, "0::/a/b\n", 1.0),
        # cgroup v1, unlimited (this machine's layout)
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/\n0::/\n", None),
        # v1 in a container: the host path in /proc/self/cgroup, the container's own cgroup at the mount
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "200000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            "4:cpu,cpuacct:/docker/abc\n",
            2.0,
        ),
        ({}, "", None),  # nothing readable: no limit known
    ],
)
def test_cgroup_cpu_quota(tmp_path, files, membership, quota):
    assert host.cgroup_cpu_quota(*_cgroup(tmp_path, files, membership)) == quota


def test_available_cpus_honours_a_container_quota(tmp_path):
    """Never more encoders than the quota's whole CPUs, never fewer than one, never more than the affinity."""
    mine = len(os.sched_getaffinity(0))
    assert host.available_cpus({}, *_cgroup(tmp_path / "a", {"cpu.max": "100000 100000"})) == 1
    assert host.available_cpus({}, *_cgroup(tmp_path / "b", {"cpu.max": "50000 100000"})) == 1
    assert host.available_cpus({}, *_cgroup(tmp_path / "c", {"cpu.max": "6400000 100000"})) == mine
    assert host.available_cpus({}, *_cgroup(tmp_path / "d", {"cpu.max": "max 100000"})) == mine
    if mine >= 2:
        assert host.available_cpus({}, *_cgroup(tmp_path / "e", {"cpu.max": "250000 100000"})) == 2
