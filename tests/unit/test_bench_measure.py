"""The benchmark's memory sampler: it must find the whole process tree and catch the peak while
reading the costly PSS figure only now and then."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.measure import TreeMemorySampler, _children_scan, _tree

# A parent that forks a child that forks a grandchild; the grandchild holds 200 MB (touched)
# once it reads "grow" on stdin, says "big" and holds it until it reads "free".
_TREE = r"""
import os, sys
if os.fork() == 0:
    if os.fork() == 0:
        sys.stdin.readline()
        block = bytearray(200 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("big", flush=True)
        sys.stdin.readline()
        del block
        print("freed", flush=True)
        sys.stdin.readline()
        os._exit(0)
    os.wait()
    os._exit(0)
print("forked", flush=True)
os.wait()
"""


@pytest.fixture
def tree():
    proc = subprocess.Popen([sys.executable, "-c", _TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "forked"
    try:
        yield proc
    finally:
        proc.kill()
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.wait()


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_tree_finds_grandchildren_as_a_proc_scan_does(tree) -> None:
    _wait(lambda: len(_tree(tree.pid)) == 3, "the grandchild")
    assert _tree(tree.pid) == _children_scan(tree.pid)
    assert _tree(tree.pid)[0] == tree.pid


def test_short_peak_is_caught_although_pss_is_read_rarely(tree) -> None:
    _wait(lambda: len(_tree(tree.pid)) == 3, "the grandchild")
    # PSS on its own schedule only every 10,000 samples: the peak must be caught by the RSS trigger.
    with TreeMemorySampler(tree.pid, interval=0.01, pss_every=10_000) as mem:
        before = mem.samples
        tree.stdin.write("grow\n")
        tree.stdin.flush()
        assert tree.stdout.readline().strip() == "big"
        seen = mem.samples
        _wait(lambda: mem.samples >= seen + 3, "samples while the memory is held")
        tree.stdin.write("free\n")
        tree.stdin.flush()
        assert tree.stdout.readline().strip() == "freed"
        _wait(lambda: mem.samples >= seen + 6, "samples after the memory is freed")
    assert mem.samples > before
    assert mem.pss_samples < mem.samples  # PSS was not read on every sample...
    assert mem.peak_pss_kb > 200 * 1024  # ...yet the 200 MB peak is in it
    assert mem.peak_rss_kb >= mem.peak_pss_kb


def test_missing_process_gives_an_empty_reading() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with TreeMemorySampler(gone.pid, interval=0.01) as mem:
        _wait(lambda: mem.samples >= 2, "two samples")
    assert mem.peak_pss_kb == 0 and mem.cpu_seconds == 0.0
