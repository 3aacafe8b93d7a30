"""One study, end to end: read ahead -> encode in workers -> ZIP in order -> result.

Stages overlap and every queue between them is bounded, so memory depends on the number of
workers and the largest file, never on the size of the study.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Protocol

from pipeline.allocator import bound_allocator
from pipeline.archive import ZipStreamWriter, ZipSummary
from pipeline.config import CompressionSettings
from pipeline.files.dicomdir import stale_directory_warnings
from pipeline.files.outcome import FileOutcome
from pipeline.files.workers import available_cpus, process_files
from pipeline.study.listing import Ignored, StudyObject, order_study, split_triggers
from pipeline.study.source import StudySource

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
READ_THREADS = 8
# Formats that deflate cannot shrink: stored, to save the CPU.
_INCOMPRESSIBLE = (".gz", ".zip", ".jpg", ".jpeg", ".png", ".j2k", ".jp2", ".mp4", ".nii.gz")

Progress = Callable[[int, int], None]


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass
class Study:
    """A study's objects in ZIP order, and what was seen but is not part of it."""

    source: StudySource
    objects: list[StudyObject]
    ignored: list[Ignored] = field(default_factory=list)

    @classmethod
    def from_source(cls, source: StudySource) -> "Study":
        objects, ignored = source.list()
        objects, triggers = split_triggers(objects)
        return cls(source, order_study(objects), ignored + triggers)


@dataclass
class StudyRun:
    """What compressing one study did; :mod:`pipeline.outputs.record` turns it into the record."""

    study: Study
    settings: CompressionSettings
    outcomes: list[FileOutcome]
    archive: ZipSummary
    warnings: list[str]
    timings: dict[str, float]
    started_at: str
    finished_at: str
    workers: int

    @property
    def has_warnings(self) -> bool:
        return bool(self.warnings) or any(o.warning for o in self.outcomes)


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _deflatable(outcome: FileOutcome) -> bool:
    if outcome.action != "kept" or (outcome.reason or "").startswith("already compressed"):
        return False
    return not outcome.path.lower().endswith(_INCOMPRESSIBLE)


def _read_ahead(source: StudySource, objects: list[StudyObject], window: int, timings: dict[str, float]) -> Iterator[tuple[str, bytes]]:
    """Objects' bytes in order, with up to ``window`` reads in flight on threads."""

    def read(obj: StudyObject) -> bytes:
        t = time.perf_counter()
        data = source.read(obj)
        timings["read"] += time.perf_counter() - t
        return data

    if not objects:
        return
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, window), thread_name_prefix="read") as pool:
        queue: list[tuple[StudyObject, Future[bytes]]] = []
        it = iter(objects)
        for obj in it:
            queue.append((obj, pool.submit(read, obj)))
            if len(queue) >= window:
                break
        while queue:
            obj, fut = queue.pop(0)
            data = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read, nxt)))
            yield obj.path, data


def compress_study(
    study: Study,
    sink: Sink,
    settings: CompressionSettings,
    *,
    workers: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    progress: Progress | None = None,
) -> StudyRun:
    """Write the study's ZIP to ``sink`` and return what happened to every object."""
    started = _utc_now()
    t0 = time.perf_counter()
    bound_allocator()  # before the workers fork and the read threads start: they inherit it
    workers = workers or available_cpus()
    timings = {"read": 0.0, "encode": 0.0, "verify": 0.0, "write": 0.0}
    small = [o for o in study.objects if o.size <= max_file_bytes]
    # Worker processes are forked inside process_files before the read threads start.
    results = process_files(_LazyReads(study.source, small, workers * 3 + 2, timings), settings, workers)
    writer = ZipStreamWriter(sink)
    outcomes: list[FileOutcome] = []
    total = len(study.objects)
    for done, obj in enumerate(study.objects, 1):
        if obj.size > max_file_bytes:
            t = time.perf_counter()
            info = writer.add_stream(obj.entry_name, study.source.iter_chunks(obj))
            timings["write"] += time.perf_counter() - t
            outcome = FileOutcome(
                path=obj.path,
                action="kept",
                bytes_in=info.file_size,
                reason=f"larger than the per-file limit of {max_file_bytes:,} bytes: kept as-is, streamed",
            )
        else:
            outcome = next(results)
            t = time.perf_counter()
            writer.add_bytes(obj.entry_name, outcome.data or b"", deflate=_deflatable(outcome))
            timings["write"] += time.perf_counter() - t
            outcome.bytes_out = len(outcome.data or b"")
            outcome.data = None  # the ZIP has it; do not hold the study in memory
            for key in ("encode", "verify"):
                timings[key] += outcome.seconds.get(key, 0.0)
        outcome.entry_name = obj.entry_name
        outcomes.append(outcome)
        if progress:
            progress(done, total)
    archive = writer.close()
    timings["total"] = time.perf_counter() - t0
    return StudyRun(
        study=study,
        settings=settings,
        outcomes=outcomes,
        archive=archive,
        warnings=stale_directory_warnings(outcomes),
        timings={k: round(v, 3) for k, v in timings.items()},
        started_at=started,
        finished_at=_utc_now(),
        workers=workers,
    )


class _LazyReads:
    """Starts the read-ahead threads only when first iterated (after the workers have forked)."""

    def __init__(self, source: StudySource, objects: list[StudyObject], window: int, timings: dict[str, float]) -> None:
        self.args = (source, objects, window, timings)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return _read_ahead(*self.args)
