"""Run :func:`process_file` in worker processes over ``Pipe``s.

Why processes and pipes: pylibjpeg-openjpeg holds the GIL and crashes under threads, and
Lambda has no /dev/shm, so ``multiprocessing.Pool``/``Queue`` fail there while ``Process`` +
``Pipe`` work. One worker is one encoder process beside this one, so reading, zipping and
uploading overlap its encoding; ``workers=0`` encodes inline (tests, tiny runs).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import threading
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Iterable, Iterator

from pipeline.allocator import encoder_allocator
from pipeline.config import CompressionSettings
from pipeline.files.outcome import FileOutcome
from pipeline.files.process import load_libraries, process_file

Job = tuple[str, bytes]

#: Jobs queued per worker beyond the one it is encoding: keeps the worker busy, memory flat.
_DEPTH = 2
#: Capacity asked for each job pipe (Linux lets any process go up to 1 MiB): a CT slice fits.
JOB_PIPE_BYTES = 1024 * 1024


def available_cpus(env: dict[str, str] | None = None, cgroup_root: str = "/sys/fs/cgroup",
                   cgroup_membership: str = "/proc/self/cgroup") -> int:
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
    v2, v1 = "/", "/"
    try:
        with open(membership) as fh:
            for line in fh:
                hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
                if hierarchy == "0" and not controllers:
                    v2 = path
                elif "cpu" in controllers.split(","):
                    v1 = path
    except (OSError, ValueError):
        pass
    found = [_v2_quota(folder) for folder in _ancestors(root, v2)]
    found += [_v1_quota(folder) for mount in ("cpu", "cpu,cpuacct") for folder in _ancestors(f"{root}/{mount}", v1)]
    limits = [q for q in found if q is not None]
    return min(limits) if limits else None


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


def _serve(jobs: Connection, results: Connection, settings: CompressionSettings, inherited: tuple[Connection, ...] = ()) -> None:
    from pipeline.codec import codec_for

    # Forked with copies of the parent's ends of its pipes (this worker's and earlier workers'):
    # close them, so that when the parent dies (even by SIGKILL) recv() sees EOF and we exit.
    for parent_end in inherited:
        parent_end.close()
    encoder_allocator()  # the parent's allocator policy would map and unmap every pixel buffer
    codec = codec_for(settings)
    while True:
        try:
            job = jobs.recv()
            if job is None:
                return
            seq, path = job
            data = jobs.recv_bytes()  # the file's bytes follow unpickled (see _Worker._send_loop)
        except (EOFError, OSError):
            return
        try:
            results.send((seq, process_file(path, data, settings, codec)))
        except OSError:  # the parent is gone
            return


def _widen(conn: Connection, size: int = JOB_PIPE_BYTES) -> None:
    """Let a whole queued file wait in the pipe: the sender writes it in one go while the worker
    is still encoding, and the worker reads it in one go, instead of both trading 64 KiB turns
    (each one waking the parent's sender thread, which then needs the GIL)."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


class _Worker:
    """One encoder process and the parent's ends of its two pipes (jobs out, results in).

    Jobs are sent by a thread of their own: a worker blocked sending a large result while the
    parent is blocked sending it the next large job would deadlock both (pipes are bounded).
    With the sender off the main thread, the main thread always drains results.
    """

    def __init__(self, ctx: mp.context.BaseContext, settings: CompressionSettings, others: tuple[Connection, ...] = ()) -> None:
        # Two one-way pipes (not one socketpair): a pipe's buffer can be widened (see _widen).
        job_out, self.jobs = ctx.Pipe(duplex=False)
        self.results, result_in = ctx.Pipe(duplex=False)
        _widen(self.jobs)
        self.proc = ctx.Process(target=_serve, args=(job_out, result_in, settings, (*self.ends, *others)), daemon=True)
        self.proc.start()
        job_out.close()
        result_in.close()
        self.in_flight: dict[int, Job] = {}
        self._outbox: queue.SimpleQueue[tuple[int, str, bytes] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="encoder-feed", daemon=True)
        self._sender.start()

    def _send_loop(self) -> None:
        # A job is two messages: (seq, path) pickled, then the file's bytes as they are. Pickling
        # them would copy every file once more on each side of the pipe.
        while True:
            item = self._outbox.get()
            try:
                if item is None:
                    self.jobs.send(None)
                    return
                seq, path, data = item
                self.jobs.send((seq, path))
                self.jobs.send_bytes(data)
            except (OSError, ValueError):  # the worker died; _collect notices on recv
                return

    @property
    def ends(self) -> tuple[Connection, Connection]:
        """This process's ends of the worker's pipes (a worker forked later must close them)."""
        return self.jobs, self.results

    def close_ends(self) -> None:
        for end in self.ends:
            end.close()

    def submit(self, seq: int, path: str, data: bytes) -> None:
        self.in_flight[seq] = (path, data)
        self._outbox.put((seq, path, data))

    def stop(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=5)


def process_files(
    jobs: Iterable[Job],
    settings: CompressionSettings,
    workers: int = 1,
) -> Iterator[FileOutcome]:
    """Outcomes in job order; a file whose worker dies is kept as-is with a warning.

    ``workers=0`` encodes in this process (no fork, no pipes): for tests and tiny runs. With
    one or more workers the encoder runs in child processes, so this process is free to read,
    zip and upload while they encode (the encoder holds the GIL).
    """
    if workers <= 0:
        from pipeline.codec import codec_for

        codec = codec_for(settings)
        for path, data in jobs:
            yield process_file(path, data, settings, codec)
        return
    yield from _Pool(settings, workers).run(jobs)


class _Pool:
    def __init__(self, settings: CompressionSettings, n: int) -> None:
        # fork: workers start in milliseconds; the engine creates them before any thread exists.
        self.ctx = mp.get_context("fork")
        from pipeline.codec import codec_for

        load_libraries(codec_for(settings))
        # The workers share this process's pages until either side writes to them. A full
        # garbage collection writes to every object it scans, so one in this process (the per-file
        # records of a long study trigger it) un-shared ~40 MB at once in a 3,900-file study.
        # Frozen objects are never scanned, here or in the workers; unfrozen when the pool closes.
        gc.freeze()
        self.settings = settings
        self.backlog: deque[tuple[int, Job]] = deque()
        self.workers: list[_Worker] = []
        for _ in range(n):
            self.workers.append(_Worker(self.ctx, settings, tuple(c for w in self.workers for c in w.ends)))

    def run(self, jobs: Iterable[Job]) -> Iterator[FileOutcome]:
        done: dict[int, FileOutcome] = {}
        pending = iter(enumerate(jobs))
        exhausted = False
        next_out = 0
        backlog = self.backlog
        window = len(self.workers) * (_DEPTH + 1)
        try:
            while True:
                # Fill idle slots, but never let finished-but-unemitted results exceed the window.
                while not exhausted and len(backlog) + sum(len(w.in_flight) for w in self.workers) + len(done) < window:
                    try:
                        backlog.append(next(pending))
                    except StopIteration:
                        exhausted = True
                for w in self.workers:
                    while backlog and len(w.in_flight) < _DEPTH:
                        seq, (path, data) = backlog.popleft()
                        w.submit(seq, path, data)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                if exhausted and not backlog and not any(w.in_flight for w in self.workers) and not done:
                    return
                busy = [w.results for w in self.workers if w.in_flight]
                if not busy:  # the results just handed out had filled the window: refill first
                    continue
                ready = wait(busy)
                for w in self.workers:
                    if w.results in ready:
                        self._collect(w, done)
        finally:
            self.close()

    def _collect(self, w: _Worker, done: dict[int, FileOutcome]) -> None:
        try:
            seq, outcome = w.results.recv()
        except (EOFError, OSError):
            # The worker died (native crash, OOM kill) on the oldest file it held: that file is
            # kept as-is; the ones queued behind it go back to the front of the line; it is replaced.
            (seq, (path, data)), *queued = sorted(w.in_flight.items())
            done[seq] = FileOutcome(
                path=path,
                action="kept",
                bytes_in=len(data),
                data=data,
                warning=True,
                reason="the encoder process died on this file (kept as-is)",
            )
            self.backlog.extendleft(reversed(queued))
            w.in_flight.clear()
            w.stop()
            w.proc.join(timeout=1)
            w.close_ends()
            others = tuple(c for x in self.workers if x is not w for c in x.ends)
            self.workers[self.workers.index(w)] = _Worker(self.ctx, self.settings, others)
            return
        w.in_flight.pop(seq, None)
        done[seq] = outcome

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
            w.close_ends()
        gc.unfreeze()  # what became garbage meanwhile can be collected again (warm containers)
