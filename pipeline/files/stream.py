"""A large object as a stream of work: its header read alone, then one task per frame.

The parent turns an object too large to read whole into items that flow, in order, through the
encoder pool: ``Begin`` (the header and the decision), one ``FrameTask`` per frame (read by
offset, in order, as the pool asks for work, so only what the budget admits is ever read), and
``End`` (the elements after Pixel Data, or why the object must be kept). An object that is not
to be encoded becomes one ``KeepWhole``. Frames then run on every encoder at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pipeline.codec.base import FrameCodec
from pipeline.files.decide import Keep, Transcode, decide, keep_whatever_asked, pixel_data_size_error
from pipeline.files.errors import describe_error
from pipeline.files.frames import FrameLayout, extended_offsets
from pipeline.files.header import Header, HeaderError, read_header, read_trailer
from pipeline.study.listing import StudyObject


@dataclass
class FileTask:
    """A small object, read whole, for one encoder."""

    obj: StudyObject
    data: bytes = field(repr=False)

    @property
    def cost(self) -> int:
        return len(self.data)


@dataclass
class FrameTask:
    """One stored frame of a streamed object."""

    obj: StudyObject
    index: int
    data: bytes = field(repr=False)
    layout: FrameLayout

    @property
    def cost(self) -> int:
        return len(self.data) + self.layout.frame_bytes  # the stored frame and what it decodes to


@dataclass
class Begin:
    obj: StudyObject
    header: Header
    decision: Transcode
    cost: int = 0


@dataclass
class End:
    obj: StudyObject
    trailer: Any = None  # pydicom Dataset of the elements after Pixel Data
    error: str | None = None  # set: keep the object as-is, with this reason (a warning)
    cost: int = 0


@dataclass
class KeepWhole:
    obj: StudyObject
    reason: str
    warning: bool = False
    transfer_syntax: str | None = None
    sop_instance_uid: str | None = None
    directory_refs: list[tuple[str, str | None, str | None]] | None = None
    cost: int = 0


Item = FileTask | FrameTask | Begin | End | KeepWhole


class _Identity(TypedDict):
    """What every ``KeepWhole`` of a readable header says about the object."""

    transfer_syntax: str | None
    sop_instance_uid: str | None


def stream_object(obj: StudyObject, reader: Any, codec: FrameCodec) -> Iterator[Item]:
    """The items of one object read through ``reader`` (seekable, positioned anywhere)."""
    try:
        header = read_header(reader)
    except HeaderError as exc:
        yield KeepWhole(obj, str(exc), warning=True)
        return
    ds, ts = header.ds, header.transfer_syntax
    sop_uid = str(ds.get("SOPInstanceUID", "")) or None
    base: _Identity = {"transfer_syntax": ts, "sop_instance_uid": sop_uid}
    kept = keep_whatever_asked(ds)
    if kept:
        yield KeepWhole(obj, kept.reason, warning=kept.warning, directory_refs=kept.directory_refs, **base)
        return
    decision = decide(ds, codec, transfer_syntax=ts, pixel_data=header.pixel is not None)
    if isinstance(decision, Keep):
        yield KeepWhole(obj, decision.reason, warning=decision.warning, **base)
        return
    if not header.little_endian:
        yield KeepWhole(obj, "big-endian object too large to read whole: kept as-is", **base)
        return
    yield Begin(obj, header, decision)
    try:
        yield from _frames(obj, header, decision)
        trailer = read_trailer(header.stream, header)
        reader.finish()  # the manifest's checksum, over every byte of the object
    except _Truncated as exc:
        yield End(obj, error=str(exc))
        return
    except HeaderError as exc:
        yield End(obj, error=str(exc))
        return
    yield End(obj, trailer)


class _Truncated(Exception):
    pass


def _frames(obj: StudyObject, header: Header, decision: Transcode) -> Iterator[FrameTask]:
    layout, count, pixel = decision.layout, decision.frames, header.pixel
    assert pixel is not None  # decide() keeps objects without Pixel Data
    stream = header.stream
    if pixel.length is not None:  # native: frame after frame
        error = pixel_data_size_error(layout, count, pixel.length)
        if error:
            raise _Truncated(error)
        size = layout.frame_bytes
        for index in range(count):
            data = stream.read(size)
            if len(data) < size:
                raise _Truncated(f"truncated DICOM: Pixel Data ends in frame {index + 1} of {count}")
            yield FrameTask(obj, index, data, layout)
        stream.seek(pixel.value_offset + pixel.length)
        return
    from pydicom.encaps import generate_frames

    index = -1
    try:
        frames = generate_frames(stream, number_of_frames=count, extended_offsets=extended_offsets(header.ds))
        for index, data in enumerate(frames):
            if index >= count:
                break
            yield FrameTask(obj, index, data, layout)
    except Exception as exc:
        raise _Truncated(
            f"malformed DICOM: encapsulated frame {index + 2} of {count} unreadable: {describe_error(exc)}"
        ) from exc
    if index + 1 < count:
        raise _Truncated(f"malformed DICOM: {index + 1} encapsulated frame(s), Number of Frames says {count}")
    _skip_to_sequence_end(stream)


def _skip_to_sequence_end(stream: Any) -> None:
    """Past the encapsulated Pixel Data's sequence delimiter (fragments nobody claimed included)."""
    import struct

    while True:
        head = stream.read(8)
        if len(head) < 8:
            raise _Truncated("truncated DICOM: encapsulated Pixel Data has no sequence delimiter")
        group, elem, length = struct.unpack("<HHI", head)
        tag = group << 16 | elem
        if tag == 0xFFFEE0DD:
            return
        if tag != 0xFFFEE000:
            raise _Truncated("malformed DICOM: encapsulated Pixel Data holds something other than items")
        stream.seek(length, 1)
