"""Measuring a process tree from outside: peak memory of all its processes together.

The sampler shares the two cores with what it measures, so it must be cheap: the tree comes from
the kernel's per-thread ``children`` lists (not a scan of /proc), RSS from ``statm`` every sample,
and PSS (``smaps_rollup``, which walks page tables: milliseconds for the worker's tree) only after
the RSS sum has grown, and otherwise every ``pss_every`` samples: ~2.5 % of one core in all.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children_scan(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (root first)."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):  # kernel without CONFIG_PROC_CHILDREN
        return _children_scan(root)
    tree = [root]
    for pid in tree:  # grows as it goes: breadth first
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    tree += [int(c) for c in fh.read().split()]
        except OSError:  # gone meanwhile
            continue
    return tree


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB: PSS splits pages shared by forked workers, so sums are not double counted."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeMemorySampler:
    """Samples the summed PSS and RSS of a process and its descendants every ``interval`` seconds,
    and the CPU time they use. PSS is read when the RSS sum has grown by ``margin_kb`` since the last
    PSS reading, and at least every ``pss_every`` samples (a worker un-sharing its parent's pages
    raises PSS but not RSS). RSS creeps up by a few pages most samples: a trigger without a margin
    read PSS on half of them."""

    def __init__(self, pid: int, interval: float = 0.05, pss_every: int = 10, margin_kb: int = 1024) -> None:
        self.pid, self.interval, self.pss_every, self.margin_kb = pid, interval, pss_every, margin_kb
        self.peak_pss_kb = self.peak_rss_kb = 0
        #: At the PSS peak: (seconds since start, PSS of the root process, PSS of its descendants).
        self.at_peak: tuple[float, int, int] = (0.0, 0, 0)
        #: Samples taken, and how many of them read PSS.
        self.samples = self.pss_samples = 0
        self._cpu: dict[int, float] = {}
        self._cpu_before: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        mark = -self.margin_kb  # the RSS sum at the last PSS reading
        for n in itertools.count():
            if self._stop.is_set():
                return
            tree = _tree(self.pid)
            for p in tree:
                self._cpu[p] = max(self._cpu.get(p, 0.0), cpu_seconds(p))
            rss = sum(_rss_kb(p) for p in tree)
            if rss > mark + self.margin_kb or n % self.pss_every == 0:
                self._sample_pss(tree, start)
                mark = rss
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.samples += 1
            time.sleep(self.interval)

    def _sample_pss(self, tree: list[int], start: float) -> None:
        totals = [_memory_kb(p) for p in tree]
        self.pss_samples += 1
        pss = sum(t[0] for t in totals)
        if pss > self.peak_pss_kb:
            root = totals[0][0] if tree and tree[0] == self.pid else 0
            self.peak_pss_kb, self.at_peak = pss, (time.perf_counter() - start, root, pss - root)
        self.peak_rss_kb = max(self.peak_rss_kb, sum(t[1] for t in totals))

    @property
    def cpu_seconds(self) -> float:
        """CPU time the tree used while sampled (user + system, all its processes)."""
        return sum(c - self._cpu_before.get(p, 0.0) for p, c in self._cpu.items())

    def __enter__(self) -> TreeMemorySampler:
        self._cpu_before = {p: cpu_seconds(p) for p in _tree(self.pid)}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_poller(stack: Any, encoders: int) -> subprocess.Popen[bytes]:
    """The local stack's SQS poller (the worker's handler, as Lambda would run it) in a process
    of its own, with ``encoders`` encoder processes, quiet: the process tree the bench measures."""
    env = {
        **os.environ,
        **stack.env(),
        "ENCODERS": str(encoders),
        "LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    command = [sys.executable, "-m", "devstack", "poll", stack.queue_url]
    return subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
