"""Measuring a process tree from outside: peak memory of all its processes together."""

from __future__ import annotations

import itertools
import os
import threading
import time


def _children(root: int) -> list[int]:
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
    and the CPU time they use."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak_pss_kb = self.peak_rss_kb = 0
        #: At the PSS peak: (seconds since start, PSS of the root process, PSS of its descendants).
        self.at_peak: tuple[float, int, int] = (0.0, 0, 0)
        self._cpu: dict[int, float] = {}
        self._cpu_before: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Listing /proc costs far more than reading three smaps_rollup files: the tree is
        # looked up every 2nd sample (workers are forked once per study), memory every sample.
        tree: list[int] = []
        start = time.perf_counter()
        for n in itertools.count():
            if self._stop.is_set():
                return
            if n % 2 == 0:
                tree = _children(self.pid)
            totals = [_memory_kb(p) for p in tree]
            for p in tree:
                self._cpu[p] = max(self._cpu.get(p, 0.0), cpu_seconds(p))
            pss = sum(t[0] for t in totals)
            if pss > self.peak_pss_kb:
                root = totals[0][0] if tree and tree[0] == self.pid else 0
                self.peak_pss_kb, self.at_peak = pss, (time.perf_counter() - start, root, pss - root)
            self.peak_rss_kb = max(self.peak_rss_kb, sum(t[1] for t in totals))
            time.sleep(self.interval)

    @property
    def cpu_seconds(self) -> float:
        """CPU time the tree used while sampled (user + system, all its processes)."""
        return sum(c - self._cpu_before.get(p, 0.0) for p, c in self._cpu.items())

    def __enter__(self) -> "TreeMemorySampler":
        self._cpu_before = {p: cpu_seconds(p) for p in _children(self.pid)}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
