"""Encoder worker processes: order, crash containment, and no pipe deadlock on large files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.config import CompressionSettings
from pipeline.files import encoders as W
from tests.helpers.paths import ROOT

LOSSLESS = CompressionSettings(mode="lossless")


@pytest.fixture(scope="module")
def jobs(corpus: Path) -> list[tuple[str, bytes]]:
    ct = sorted((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm"))[:6]
    return [(f"CT/{p.name}", p.read_bytes()) for p in ct] + [("notes.txt", b"not dicom")]


def test_outcomes_in_order_and_equal_to_inline(jobs):
    inline = [o.data for o in W.process_files(iter(jobs), LOSSLESS, encoders=0)]
    pooled = list(W.process_files(iter(jobs), LOSSLESS, encoders=2))
    assert [o.path for o in pooled] == [p for p, _ in jobs]
    assert [o.data for o in pooled] == inline


def test_a_crashing_encoder_keeps_the_file_and_the_study_goes_on(jobs, monkeypatch):
    real = W.process_file

    def crash_on_third(path, data, settings, codec=None):
        if path == jobs[2][0]:
            os._exit(3)  # what a segfault in the native encoder looks like to the parent
        return real(path, data, settings, codec)

    monkeypatch.setattr(W, "process_file", crash_on_third)  # inherited by the forked workers
    out = list(W.process_files(iter(jobs), LOSSLESS, encoders=2))
    assert [o.path for o in out] == [p for p, _ in jobs]
    crashed = out[2]
    assert crashed.action == "kept" and crashed.warning and crashed.data == jobs[2][1]
    assert "died" in crashed.reason
    assert [o.action for i, o in enumerate(out[:-1]) if i != 2] == ["compressed"] * 5


def test_large_jobs_and_results_do_not_deadlock_the_pipes(corpus):
    """A worker sending a large result while the parent sends it a large job must not hang."""
    script = textwrap.dedent(
        f"""
        import glob, os
        from pipeline.config import CompressionSettings
        from pipeline.files.encoders import process_files
        ct = sorted(glob.glob({str(corpus / "ct-series/ge-hispeed-head-tilt/*.dcm")!r}))[:8]
        jobs = [("blob.bin", os.urandom(3_000_000))] + [(f"CT/{{i}}", open(p, "rb").read()) for i, p in enumerate(ct)]
        jobs += [("blob2.bin", os.urandom(3_000_000))]
        out = list(process_files(iter(jobs), CompressionSettings(), encoders=2))
        print(len(out), sum(o.action == "compressed" for o in out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["10", "8"]


def test_available_cpus_follows_lambda_memory():
    assert W.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}) == 1
    assert W.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}) == 2
    assert W.available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}) == 5
    assert W.available_cpus({}) == min(len(os.sched_getaffinity(0)), int(W.cgroup_cpu_quota() or 10**6))


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
    assert W.cgroup_cpu_quota(*_cgroup(tmp_path, files, membership)) == quota


def test_available_cpus_honours_a_container_quota(tmp_path):
    """Never more encoders than the quota's whole CPUs, never fewer than one, never more than the affinity."""
    mine = len(os.sched_getaffinity(0))
    assert W.available_cpus({}, *_cgroup(tmp_path / "a", {"cpu.max": "100000 100000"})) == 1
    assert W.available_cpus({}, *_cgroup(tmp_path / "b", {"cpu.max": "50000 100000"})) == 1
    assert W.available_cpus({}, *_cgroup(tmp_path / "c", {"cpu.max": "6400000 100000"})) == mine
    assert W.available_cpus({}, *_cgroup(tmp_path / "d", {"cpu.max": "max 100000"})) == mine
    if mine >= 2:
        assert W.available_cpus({}, *_cgroup(tmp_path / "e", {"cpu.max": "250000 100000"})) == 2


def test_a_queued_slice_fits_in_the_job_pipe_while_the_worker_is_busy(jobs):
    """The sender hands a whole CT slice (~0.5 MB) to the pipe without waiting for the worker
    to read it: an unwidened pipe (64 KiB) would block the write until the worker came back."""
    import fcntl
    import multiprocessing as mp
    import threading

    reader, writer = mp.get_context("fork").Pipe(duplex=False)
    try:
        if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < W.JOB_PIPE_BYTES:
            pytest.skip("this kernel's pipe-max-size is below 1 MiB")
        W._widen(writer)
        assert fcntl.fcntl(writer.fileno(), fcntl.F_GETPIPE_SZ) >= W.JOB_PIPE_BYTES
        slice_bytes = jobs[0][1]
        assert len(slice_bytes) > 256 * 1024
        sent = threading.Thread(
            target=lambda: (writer.send(("0", "a.dcm")), writer.send_bytes(slice_bytes)), daemon=True
        )
        sent.start()
        sent.join(timeout=10)
        assert not sent.is_alive(), "the write waited for a reader"
        assert reader.recv() == ("0", "a.dcm") and reader.recv_bytes() == slice_bytes
    finally:
        reader.close()
        writer.close()
