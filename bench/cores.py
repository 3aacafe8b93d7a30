"""Which cores the measured pipeline may use, and which the bench's helpers use.

The targets are for a 2-core machine, but a local stack puts S3 (the moto server) and the bench's
own driver on the same machine. On Lambda, S3 is elsewhere. On a machine with cores to spare, the
pipeline (and every loop it is compared with) is pinned to a budget of cores and the helpers to
the rest, so the pipeline gets exactly its 2 cores. With no cores to spare (this 2-core machine),
everything shares them, and the report says how much CPU the helpers took.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class CoreSplit:
    pipeline: frozenset[int]
    helpers: frozenset[int]  # empty: no core to spare, the helpers share the pipeline's cores

    @property
    def pinned(self) -> bool:
        return bool(self.helpers)

    def describe(self) -> str:
        if self.pinned:
            return (
                f"the pipeline and the loops it is compared with ran on CPUs {_span(self.pipeline)}; "
                f"the local stack's S3 server and the bench on CPUs {_span(self.helpers)}"
            )
        return (
            f"not pinned: this machine lets the bench use {len(self.pipeline)} CPU(s), no more than the "
            "pipeline's budget, so the local stack's S3 server and the bench share them with the pipeline"
        )


def split_cores(available: Iterable[int], budget: int) -> CoreSplit:
    """The lowest ``budget`` CPUs for the pipeline and the rest for the helpers, if any are left."""
    if budget < 1:
        raise ValueError("the pipeline needs at least one CPU")
    cores = sorted(available)
    return CoreSplit(frozenset(cores[:budget]), frozenset(cores[budget:]))


def pin(pid: int, cores: Iterable[int]) -> None:
    """Every current thread of ``pid``; threads and processes it creates later inherit it."""
    allowed = set(cores)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), allowed)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


@contextmanager
def running_on(cores: Iterable[int]) -> Iterator[None]:
    """This process (and what it starts meanwhile) on ``cores``, then back where it was."""
    before = os.sched_getaffinity(0)
    pin(os.getpid(), cores)
    try:
        yield
    finally:
        pin(os.getpid(), before)


def _span(cores: frozenset[int]) -> str:
    ordered = sorted(cores)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


def best_seconds(run: dict[str, float], cores: int, *, helpers: bool) -> float:
    """The fastest a measured pipeline run could have been with the CPU it used: every core busy
    all the time. ``helpers``: count the CPU of the local S3 server and of the bench too (they
    ran on the same cores); without it, what the pipeline's own processes needed, as on Lambda."""
    cpu = run["worker_cpu_s"]
    if helpers:
        cpu += run["server_cpu_s"] + run.get("bench_cpu_s", 0.0)
    return cpu / cores
