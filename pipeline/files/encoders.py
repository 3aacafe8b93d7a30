"""Run tasks (whole small files, or frames of streamed objects) in encoder processes over ``Pipe``s.

Why processes and pipes: pylibjpeg-openjpeg holds the GIL and crashes under threads, and
Lambda has no /dev/shm, so ``multiprocessing.Pool``/``Queue`` fail there while ``Process`` +
``Pipe`` work. One encoder is one encoder process beside this one, so reading, zipping and
uploading overlap its encoding; ``encoders=0`` encodes inline (tests, tiny runs).
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection, wait

from pipeline.allocator import encoder_allocator
from pipeline.codec.base import FrameCodec
from pipeline.config import CompressionSettings
from pipeline.files.errors import describe_error
from pipeline.files.frames import FrameResult, encode_frame
from pipeline.files.outcome import FileOutcome
from pipeline.files.process import load_libraries, process_file
from pipeline.files.stream import FileTask, FrameTask, Item

# Re-exported (``as``: explicitly, for type checkers too): the pool sizes itself by them.

Task = FileTask | FrameTask
Result = FileOutcome | FrameResult | Item

#: Jobs queued per encoder beyond the one it is encoding: keeps the encoder busy, memory flat.
_DEPTH = 2
#: Capacity asked for each job pipe (Linux lets any process go up to 1 MiB): a CT slice fits.
JOB_PIPE_BYTES = 1024 * 1024


def run_task(task: FileTask | FrameTask, settings: CompressionSettings, codec: FrameCodec) -> FileOutcome | FrameResult:
    """What an encoder does with one task: a whole small file, or one frame of a streamed object."""
    if isinstance(task, FrameTask):
        return encode_frame(task.index, task.data, task.layout, codec, verify=settings.verify, floor=settings.floor)
    return process_file(task.obj.path, task.data, settings, codec)


def _serve(
    jobs: Connection, results: Connection, settings: CompressionSettings, inherited: tuple[Connection, ...] = ()
) -> None:
    from pipeline.codec import codec_for

    # Forked with copies of the parent's ends of its pipes (this encoder's and earlier encoders'):
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
            seq, task = job
            task.data = jobs.recv_bytes()  # the bytes follow unpickled (see _Encoder._send_loop)
        except (EOFError, OSError):
            return
        try:
            result = run_task(task, settings, codec)
        except Exception as exc:  # a bug, not bad input (that is an outcome): this task fails, the encoder lives
            result = _failed(task, f"an internal error ({describe_error(exc)})")
        try:
            results.send((seq, result))
        except OSError:  # the parent is gone
            return
        del task, job


def _widen(conn: Connection, size: int = JOB_PIPE_BYTES) -> None:
    """Let a whole queued file wait in the pipe: the sender writes it in one go while the encoder
    is still encoding, and the encoder reads it in one go, instead of both trading 64 KiB turns
    (each one waking the parent's sender thread, which then needs the GIL)."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, size)
    except (ImportError, AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


class _Encoder:
    """One encoder process and the parent's ends of its two pipes (jobs out, results in).

    Jobs are sent by a thread of their own: a encoder blocked sending a large result while the
    parent is blocked sending it the next large job would deadlock both (pipes are bounded).
    With the sender off the main thread, the main thread always drains results.
    """

    def __init__(
        self, ctx: mp.context.ForkContext, settings: CompressionSettings, others: tuple[Connection, ...] = ()
    ) -> None:
        # Two one-way pipes (not one socketpair): a pipe's buffer can be widened (see _widen).
        job_out, self.jobs = ctx.Pipe(duplex=False)
        self.results, result_in = ctx.Pipe(duplex=False)
        _widen(self.jobs)
        self.proc = ctx.Process(target=_serve, args=(job_out, result_in, settings, (*self.ends, *others)), daemon=True)
        self.proc.start()
        job_out.close()
        result_in.close()
        self.in_flight: dict[int, Task] = {}
        self._outbox: queue.SimpleQueue[tuple[int, Task] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="encoder-feed", daemon=True)
        self._sender.start()

    def _send_loop(self) -> None:
        # A job is two messages: (seq, task without its bytes) pickled, then the bytes as they
        # are. Pickling them would copy every file or frame once more on each side of the pipe.
        while True:
            item = self._outbox.get()
            try:
                if item is None:
                    self.jobs.send(None)
                    return
                seq, task = item
                self.jobs.send((seq, replace(task, data=b"")))
                self.jobs.send_bytes(task.data)
            except (OSError, ValueError):  # the encoder died; _collect notices on recv
                return

    @property
    def ends(self) -> tuple[Connection, Connection]:
        """This process's ends of the encoder's pipes (a encoder forked later must close them)."""
        return self.jobs, self.results

    def close_ends(self) -> None:
        for end in self.ends:
            end.close()

    def submit(self, seq: int, task: Task) -> None:
        self.in_flight[seq] = task
        self._outbox.put((seq, task))

    def stop(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=5)


def process_items(
    items: Iterable[Item],
    settings: CompressionSettings,
    encoders: int = 1,
    budget_bytes: int = 1 << 62,
) -> Iterator[Result]:
    """Results in item order: a FileTask's FileOutcome, a FrameTask's FrameResult, and every other
    item (the markers of :mod:`pipeline.files.stream`) as it is. A task whose encoder dies gives
    a kept outcome or a failed frame, with the reason.

    Work is admitted while the bytes of the tasks read and not yet handed out stay below
    ``budget_bytes`` (at least one task is always admitted). ``encoders=0`` encodes in this
    process (no fork, no pipes): for tests and tiny runs.
    """
    if encoders <= 0:
        from pipeline.codec import codec_for

        codec = codec_for(settings)
        for item in items:
            yield run_task(item, settings, codec) if isinstance(item, (FileTask, FrameTask)) else item
        return
    yield from _Pool(settings, encoders, budget_bytes).run(items)


def process_files(
    jobs: Iterable[tuple[str, bytes]], settings: CompressionSettings, encoders: int = 1
) -> Iterator[FileOutcome]:
    """Outcomes of whole files, in order (the small-file path alone; tests and the bench use it)."""
    from pipeline.study.listing import StudyObject

    tasks = (FileTask(StudyObject(path, len(data)), data) for path, data in jobs)
    for result in process_items(tasks, settings, encoders):
        assert isinstance(result, FileOutcome)
        yield result


def _failed(task: Task, why: str) -> FileOutcome | FrameResult:
    if isinstance(task, FrameTask):
        return FrameResult(task.index, failed="encode", detail=f"{why} on this frame")
    return FileOutcome(
        path=task.obj.path,
        action="kept",
        bytes_in=len(task.data),
        data=task.data,
        warning=True,
        reason=f"{why} on this file (kept as-is)",
    )


class _Pool:
    def __init__(self, settings: CompressionSettings, n: int, budget_bytes: int) -> None:
        # fork: encoders start in milliseconds; the engine creates them before any thread exists.
        self.ctx = mp.get_context("fork")
        from pipeline.codec import codec_for

        load_libraries(codec_for(settings))
        # The encoders share this process's pages until either side writes to them. A full
        # garbage collection writes to every object it scans, so one in this process (the per-file
        # records of a long study trigger it) un-shared ~40 MB at once in a 3,900-file study.
        # Frozen objects are never scanned, here or in the encoders; unfrozen when the pool closes.
        gc.freeze()
        self.settings = settings
        self.budget = budget_bytes
        self.backlog: deque[tuple[int, Task]] = deque()
        self.encoders: list[_Encoder] = []
        for _ in range(n):
            self.encoders.append(_Encoder(self.ctx, settings, tuple(c for w in self.encoders for c in w.ends)))

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        done: dict[int, Result] = {}
        costs: dict[int, int] = {}  # bytes of every admitted task not yet handed out
        pending = iter(enumerate(items))
        exhausted = False
        next_out = 0
        backlog = self.backlog
        window = len(self.encoders) * (_DEPTH + 1)
        try:
            while True:
                # Fill idle slots, but never let admitted-but-unemitted work exceed the window (a
                # count) or the budget (bytes); markers pass straight to the output in order.
                while not exhausted and len(costs) < window and (not costs or sum(costs.values()) < self.budget):
                    try:
                        seq, item = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    if isinstance(item, (FileTask, FrameTask)):
                        costs[seq] = item.cost
                        backlog.append((seq, item))
                    else:
                        done[seq] = item
                for w in self.encoders:
                    while backlog and len(w.in_flight) < _DEPTH:
                        w.submit(*backlog.popleft())
                while next_out in done:
                    costs.pop(next_out, None)
                    yield done.pop(next_out)
                    next_out += 1
                if exhausted and not backlog and not any(w.in_flight for w in self.encoders) and not done:
                    return
                busy = [w.results for w in self.encoders if w.in_flight]
                if not busy:  # the results just handed out had filled the window: refill first
                    continue
                ready = wait(busy)
                for w in self.encoders:
                    if w.results in ready:
                        self._collect(w, done)
        finally:
            self.close()

    def _collect(self, w: _Encoder, done: dict[int, Result]) -> None:
        try:
            seq, outcome = w.results.recv()
        except (EOFError, OSError):
            # The encoder died (native crash, OOM kill) on the oldest task it held: that file is
            # kept as-is (that frame fails, so its object is kept); the ones queued behind it go
            # back to the front of the line; it is replaced.
            (seq, task), *queued = sorted(w.in_flight.items())
            done[seq] = _failed(task, "the encoder process died")
            self.backlog.extendleft(reversed(queued))
            w.in_flight.clear()
            w.stop()
            w.proc.join(timeout=1)
            w.close_ends()
            others = tuple(c for x in self.encoders if x is not w for c in x.ends)
            self.encoders[self.encoders.index(w)] = _Encoder(self.ctx, self.settings, others)
            return
        w.in_flight.pop(seq, None)
        done[seq] = outcome

    def close(self) -> None:
        for w in self.encoders:
            w.stop()
        for w in self.encoders:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
            w.close_ends()
        gc.unfreeze()  # what became garbage meanwhile can be collected again (warm containers)
