"""The benchmark's core split: the measured pipeline gets its CPU budget, the helpers the rest,
and a pinned process's later threads and children stay where it was pinned."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.cores import best_seconds, pin, running_on, split_cores


def test_no_core_to_spare_means_shared():
    split = split_cores({1, 0}, budget=2)
    assert split.pipeline == {0, 1} and not split.pinned
    assert "share them" in split.describe()
    assert not split_cores({0, 1}, budget=4).pinned  # a budget above the machine: all of it, shared


def test_spare_cores_go_to_the_helpers():
    split = split_cores({3, 0, 2, 1, 5}, budget=2)
    assert split.pinned
    assert split.pipeline == {0, 1} and split.helpers == {2, 3, 5}
    assert "CPUs 0-1" in split.describe() and "CPUs 2,3,5" in split.describe()
    with pytest.raises(ValueError):
        split_cores({0, 1}, budget=0)


def test_best_seconds_counts_the_helpers_only_when_asked():
    run = {"worker_cpu_s": 16.0, "server_cpu_s": 1.5, "bench_cpu_s": 0.5}
    assert best_seconds(run, 2, helpers=False) == 8.0
    assert best_seconds(run, 2, helpers=True) == 9.0


# Starts a thread, says "ready" and waits; then reports the CPUs of its main thread, of that
# thread (running before the pin), of a new thread and of a new child process.
_CHILD = r"""
import os, sys, threading
seen, go = {}, threading.Event()
early = threading.Thread(target=lambda: (go.wait(), seen.update(early=sorted(os.sched_getaffinity(0)))))
early.start()
print("ready", flush=True)
sys.stdin.readline()
go.set(); early.join()
t = threading.Thread(target=lambda: seen.update(thread=sorted(os.sched_getaffinity(0))))
t.start(); t.join()
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, repr(sorted(os.sched_getaffinity(0))).encode()); os._exit(0)
os.wait()
print(sorted(os.sched_getaffinity(0)), seen["early"], seen["thread"], os.read(r, 100).decode(), flush=True)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one of them")
def test_pin_reaches_every_thread_and_later_children():
    target = min(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pin(proc.pid, {target})
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
    assert out.strip() == " ".join([f"[{target}]"] * 4)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one of them")
def test_running_on_restores_the_previous_cpus():
    before = os.sched_getaffinity(0)
    with running_on({max(before)}):
        assert os.sched_getaffinity(0) == {max(before)}
    assert os.sched_getaffinity(0) == before
