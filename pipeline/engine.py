"""One study, end to end: read ahead -> encode in encoders -> ZIP in order -> result.

Stages overlap and every queue between them is bounded in bytes (:mod:`pipeline.budget`): small
objects are read whole and encoded by one encoder each; larger ones are streamed as header +
frames across all encoders and assembled from a spool. Memory depends on the budget, never on
the size of the study or of any one object.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from typing import Protocol

from pipeline.allocator import bound_allocator
from pipeline.archive import ZipStreamWriter, ZipSummary
from pipeline.budget import MemoryBudget, budget_override
from pipeline.codec import FrameCodec, codec_for
from pipeline.config import CompressionSettings
from pipeline.files.assemble import Assembly
from pipeline.files.dicomdir import stale_directory_warnings
from pipeline.files.encoders import process_items
from pipeline.files.frames import FrameResult
from pipeline.files.header import DEFLATED
from pipeline.files.outcome import FileOutcome
from pipeline.files.stream import Begin, End, FileTask, Item, KeepWhole, stream_object
from pipeline.host import available_cpus
from pipeline.study.listing import StudyObject
from pipeline.study.source import ObjectReader, StudySource
from pipeline.study.study import Study

READ_THREADS = 8
#: Kept objects larger than this go into the ZIP without compression work (deflate would cost
#: about a minute per GB and save little on pixel data).
LARGE_KEPT = 64 * 1024 * 1024
# Formats that deflate cannot shrink: stored, to save the CPU.
_INCOMPRESSIBLE = (".gz", ".zip", ".jpg", ".jpeg", ".png", ".j2k", ".jp2", ".mp4", ".nii.gz")

Progress = Callable[[int, int], None]


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


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
    encoders: int
    budget: MemoryBudget | None = None
    spooled_bytes: int = 0

    @property
    def has_warnings(self) -> bool:
        return bool(self.warnings) or any(o.warning for o in self.outcomes)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _deflatable(outcome: FileOutcome) -> bool:
    if outcome.action != "kept" or (outcome.reason or "").startswith("already"):
        return False
    return not outcome.path.lower().endswith(_INCOMPRESSIBLE)


def _is_deflated(data: bytes) -> bool:
    """The file meta names the Deflated transfer syntax (a cheap look at the first bytes: such a
    file must be inflated as a stream, never whole, however small it is)."""
    at = data.find(b"\x02\x00\x10\x00UI", 132, 132 + 4096)
    if at < 0:
        return False
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    return data[at + 8 : at + 8 + length].rstrip(b"\x00 ") == DEFLATED.encode()


class _ReadAhead:
    """Small objects' bytes, read on threads ahead of need while the bytes read and not yet
    taken stay under ``max_bytes``."""

    def __init__(
        self,
        source: StudySource,
        objects: list[StudyObject],
        max_bytes: int,
        timings: dict[str, float],
        max_count: int = 2 * READ_THREADS,
    ) -> None:
        self.source, self.max_bytes, self.timings, self.max_count = source, max_bytes, timings, max_count
        self.queue = deque(objects)
        self.reads: dict[int, Future[bytes]] = {}
        self.held = 0
        self.pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="read")

    def _read(self, obj: StudyObject) -> bytes:
        t = time.perf_counter()
        data = self.source.read(obj)
        self.timings["read"] += time.perf_counter() - t
        return data

    def _fill(self) -> None:
        while (
            self.queue
            and (not self.reads or self.held + self.queue[0].size <= self.max_bytes)
            and len(self.reads) < self.max_count
        ):
            obj = self.queue.popleft()
            self.reads[id(obj)] = self.pool.submit(self._read, obj)
            self.held += obj.size

    def take(self, obj: StudyObject) -> bytes:
        self._fill()
        data = self.reads.pop(id(obj)).result()
        self.held -= obj.size
        self._fill()
        return data

    def close(self) -> None:
        for fut in self.reads.values():
            fut.cancel()
        self.pool.shutdown(wait=True)


def _items(
    study: Study, budget: MemoryBudget, codec: FrameCodec, timings: dict[str, float], encoders: int
) -> Iterator[Item]:
    """The study as work, in ZIP order: small objects whole, the others header + frames."""
    small = [o for o in study.objects if o.size <= budget.stream_threshold]
    # Reads ahead: enough to keep every encoder fed (its queue and the one it encodes) and no more.
    reads = _ReadAhead(study.source, small, budget.in_flight // 2, timings, max_count=encoders * 3 + 2)
    try:
        for obj in study.objects:
            if obj.size <= budget.stream_threshold:
                data = reads.take(obj)
                if not _is_deflated(data):
                    yield FileTask(obj, data)
                    continue
                reader = ObjectReader(BytesIO(data))
            else:
                reader = study.source.open(obj)
            with reader:
                yield from stream_object(obj, reader, codec)
    finally:
        reads.close()


class _Archiver:
    """The consumer side: results in order into the ZIP, one outcome per object."""

    def __init__(
        self,
        study: Study,
        writer: ZipStreamWriter,
        settings: CompressionSettings,
        codec: FrameCodec,
        budget: MemoryBudget,
        timings: dict[str, float],
        on_pixels: Callable[[StudyObject, int], None] | None = None,
    ) -> None:
        self.study, self.writer, self.settings, self.codec = study, writer, settings, codec
        self.budget, self.timings, self.on_pixels = budget, timings, on_pixels
        self.assembly: Assembly | None = None
        self.spooled = 0

    def take(self, result: object) -> FileOutcome | None:
        """Handle one result; the object's outcome once it is complete in the ZIP."""
        if isinstance(result, FileOutcome):
            return self._whole(result)
        if isinstance(result, FrameResult):
            assert self.assembly is not None
            self.assembly.add(result)
            self.timings["encode"] += result.seconds[0]
            self.timings["verify"] += result.seconds[1]
            return None
        if isinstance(result, Begin):
            self.assembly = Assembly(result, self.codec, self.settings, self.budget.spool_memory)
            if self.on_pixels:  # the time guard learns what a streamed object really holds
                self.on_pixels(result.obj, result.decision.layout.frame_bytes * result.decision.frames)
            return None
        if isinstance(result, End):
            return self._assembled(result)
        assert isinstance(result, KeepWhole)
        return self._keep(
            result.obj,
            result.reason,
            result.warning,
            transfer_syntax=result.transfer_syntax,
            sop_uid=result.sop_instance_uid,
            refs=result.directory_refs,
        )

    def _whole(self, outcome: FileOutcome) -> FileOutcome:
        obj = self._object(outcome.path)
        t = time.perf_counter()
        self.writer.add_bytes(obj.entry_name, outcome.data or b"", deflate=_deflatable(outcome))
        self.timings["write"] += time.perf_counter() - t
        outcome.bytes_out = len(outcome.data or b"")
        outcome.data = None  # the ZIP has it; do not hold the study in memory
        for key in ("encode", "verify"):
            self.timings[key] += outcome.seconds.get(key, 0.0)
        outcome.entry_name = obj.entry_name
        return outcome

    def _assembled(self, end: End) -> FileOutcome:
        assembly, self.assembly = self.assembly, None
        assert assembly is not None
        try:
            outcome = assembly.finish(end, self.writer, end.obj.entry_name)
            if outcome is None:
                ts = assembly.begin.header.transfer_syntax
                uid = str(assembly.begin.header.ds.get("SOPInstanceUID", "")) or None
                return self._keep(end.obj, assembly.failure or "", True, transfer_syntax=ts, sop_uid=uid)
            self.spooled += outcome.spooled_bytes
            self.timings["write"] += outcome.seconds.get("write", 0.0)
            outcome.entry_name = end.obj.entry_name
            return outcome
        finally:
            assembly.close()

    def _keep(
        self,
        obj: StudyObject,
        reason: str,
        warning: bool,
        *,
        transfer_syntax: str | None = None,
        sop_uid: str | None = None,
        refs: list[tuple[str, str | None, str | None]] | None = None,
    ) -> FileOutcome:
        """Stream the original into the ZIP, one chunk at a time; large or compressed data
        without compression work (deflate's stored blocks), since deflate would not pay."""
        t = time.perf_counter()
        heavy = obj.size > LARGE_KEPT or reason.startswith("already") or obj.path.lower().endswith(_INCOMPRESSIBLE)
        info = self.writer.add_stream(obj.entry_name, self.study.source.iter_chunks(obj), level=0 if heavy else 6)
        self.timings["write"] += time.perf_counter() - t
        return FileOutcome(
            path=obj.path,
            action="kept",
            bytes_in=info.file_size,
            bytes_out=info.file_size,
            reason=reason,
            warning=warning,
            transfer_syntax_in=transfer_syntax,
            transfer_syntax_out=transfer_syntax,
            sop_instance_uid_in=sop_uid,
            directory_refs=refs,
            entry_name=obj.entry_name,
        )

    def _object(self, path: str) -> StudyObject:
        return self.study.by_path[path]


def compress_study(
    study: Study,
    sink: Sink,
    settings: CompressionSettings,
    *,
    encoders: int | None = None,
    budget: MemoryBudget | None = None,
    progress: Progress | None = None,
    on_pixels: Callable[[StudyObject, int], None] | None = None,
) -> StudyRun:
    """Write the study's ZIP to ``sink`` and return what happened to every object."""
    started = _utc_now()
    t0 = time.perf_counter()
    bound_allocator()  # before the encoders fork and the read threads start: they inherit it
    encoders = encoders or available_cpus()
    budget = budget or MemoryBudget.for_host(encoders, in_flight=budget_override())
    timings = {"read": 0.0, "encode": 0.0, "verify": 0.0, "write": 0.0}
    codec = codec_for(settings)
    # Encoder processes are forked inside process_items before the read threads start.
    results = process_items(_LazyItems(study, budget, codec, timings, encoders), settings, encoders, budget.in_flight)
    writer = ZipStreamWriter(sink)
    archiver = _Archiver(study, writer, settings, codec, budget, timings, on_pixels)
    outcomes: list[FileOutcome] = []
    total = len(study.objects)
    try:
        for result in results:
            outcome = archiver.take(result)
            if outcome is not None:
                outcomes.append(outcome)
            # Also after each frame of a streamed object: the heartbeat (lock refresh, record,
            # deadline) must not wait for a 2,000-frame object to finish.
            if progress and (outcome is not None or isinstance(result, FrameResult)):
                progress(len(outcomes), total)
    finally:
        if archiver.assembly is not None:
            archiver.assembly.close()
        close = getattr(results, "close", None)
        if close:
            close()
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
        encoders=encoders,
        budget=budget,
        spooled_bytes=archiver.spooled,
    )


class _LazyItems:
    """Starts the read-ahead threads only when first iterated (after the encoders have forked)."""

    def __init__(
        self, study: Study, budget: MemoryBudget, codec: FrameCodec, timings: dict[str, float], encoders: int
    ) -> None:
        self.args = (study, budget, codec, timings, encoders)

    def __iter__(self) -> Iterator[Item]:
        return _items(*self.args)
