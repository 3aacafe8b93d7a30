"""One frame of one object, from the study or from the ZIP, without reading the object whole.

The report shows a frame or two per series, so that is all it decodes: a 2,000-frame object
costs one frame here, however large it is. Objects are read the way the pipeline read them:
those under its streaming threshold whole, through pydicom (any transfer syntax, byte order or
deflated dataset it accepts); larger ones as header + one frame by offset
(:func:`pipeline.files.header.read_header`, :class:`pipeline.files.frames.FrameLayout`), which
gives the same pixels. ZIP entries written by the pipeline are stored, so a compressed entry is
read in place through a window on the archive, by the same header + frame route.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import numpy as np

from pipeline.files.frames import FrameLayout, extended_offsets
from pipeline.files.header import DEFLATED, SeekableReader, read_header
from pipeline.study.listing import StudyObject
from pipeline.study.source import StudySource

#: Objects up to this size are read whole (the pipeline's default streaming threshold).
WHOLE_BELOW = 16 * 1024 * 1024
_SKIP_CHUNK = 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length


class FrameReadError(Exception):
    """The frame cannot be shown; the message is safe to print (no header values)."""


@dataclass
class Frame:
    """One decoded frame (colour as RGB) and the header of the object it comes from."""

    pixels: np.ndarray
    header: Any  # a pydicom Dataset: read to render, never written into the report
    index: int
    count: int


def frame_count(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _pick(ds: Any, index: int | None) -> tuple[int, int]:
    count = frame_count(ds)
    index = count // 2 if index is None else index
    if not 0 <= index < count:
        raise FrameReadError(f"frame {index + 1} asked of an object of {count}")
    return index, count


def _as_rgb(pixels: np.ndarray, photometric: str) -> np.ndarray:
    """YBR_FULL as RGB, as ``pixel_array`` shows it (J2K's YBR_RCT/ICT decode to RGB already)."""
    if photometric in ("YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3:
        from pydicom.pixels import convert_color_space

        return convert_color_space(pixels, "YBR_FULL", "RGB")
    return pixels


def frame_from_bytes(data: bytes, index: int | None = None) -> Frame:
    """Frame ``index`` (the middle one when None) of a whole object's bytes."""
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    from pipeline.gdcm_on_demand import register

    register()
    ds = dcmread(BytesIO(data))
    index, count = _pick(ds, index)
    return Frame(pixel_array(ds, index=index), ds, index, count)


def _skip_to(stream: Any, offset: int) -> None:
    """Forward to ``offset`` in a stream that inflates as it is read: in steps, so what was
    skipped is never held (a seek there would inflate the whole gap at once)."""
    while stream.tell() < offset:
        if not stream.read(min(_SKIP_CHUNK, offset - stream.tell())):
            raise FrameReadError("truncated DICOM: Pixel Data ends before the frame")


def frame_from_stream(reader: SeekableReader, index: int | None = None) -> Frame:
    """Frame ``index`` (the middle one when None) of an object read through a seekable
    ``reader``: its header, then that frame alone."""
    from pydicom.encaps import get_frame

    header = read_header(reader)
    ds, pixel = header.ds, header.pixel
    if pixel is None:
        raise FrameReadError("no Pixel Data")
    layout = FrameLayout.of(ds, header.transfer_syntax)
    index, count = _pick(ds, index)
    stream = header.stream
    if layout.encapsulated:
        data = get_frame(stream, index, number_of_frames=count, extended_offsets=extended_offsets(ds))
    else:
        target = pixel.value_offset + index * layout.frame_bytes
        if header.transfer_syntax == DEFLATED:
            _skip_to(stream, target)
        else:
            stream.seek(target)
        data = stream.read(layout.frame_bytes)
        if len(data) < layout.frame_bytes:
            raise FrameReadError(f"truncated DICOM: Pixel Data ends in frame {index + 1} of {count}")
    return Frame(_as_rgb(layout.decode(data), layout.photometric), ds, index, count)


def source_frame(
    source: StudySource, obj: StudyObject, index: int | None = None, *, whole_below: int = WHOLE_BELOW
) -> Frame:
    """Frame ``index`` of a study object: read whole when small, else header + that frame."""
    if obj.size <= whole_below:
        return frame_from_bytes(source.read(obj), index)
    with source.open(obj) as reader:
        return frame_from_stream(reader, index)


class EntryReader:
    """A seekable, read-only window on a stored ZIP entry's bytes inside the archive's file."""

    def __init__(self, archive: BinaryIO, start: int, size: int) -> None:
        self._archive, self._start, self._size, self._pos = archive, start, size, 0

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._archive.seek(self._start + self._pos)
        data = self._archive.read(size)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def archive_frame(archive: zipfile.ZipFile, name: str, index: int | None = None) -> Frame:
    """Frame ``index`` of ZIP entry ``name``, read in place when it is stored (as the pipeline
    stores re-encoded images), else through zipfile's own (slower) seekable reader."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or archive.fp is None:
        with archive.open(info) as entry:
            return frame_from_stream(entry, index)
    fp: Any = archive.fp
    fp.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(fp.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise FrameReadError("the ZIP entry's local header is not where the directory says")
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    return frame_from_stream(EntryReader(fp, start, info.file_size), index)
