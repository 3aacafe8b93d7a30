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
