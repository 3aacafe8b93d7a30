"""An object's header, read alone: everything before Pixel Data, from a bounded read.

For objects too large to read whole. The reader is left at the Pixel Data value, so frames
can be read from there in order; a Deflated dataset is inflated as it is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.files.errors import describe_error
from pipeline.files.inflate import InflatingReader

DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
#: A header (or the elements after Pixel Data) larger than this is not read: the object is kept.
HEADER_LIMIT = 32 * 1024 * 1024


class SeekableReader(Protocol):
    """What headers and frames are read through: a seekable binary file (an open file, a ZIP
    entry, :class:`pipeline.study.source.ObjectReader`, a window on a stored ZIP entry)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


class HeaderError(Exception):
    """The header cannot be read within bounds; the message is safe to record."""


class _TooLarge(Exception):
    pass


class Bounded:
    """Reads through ``raw`` but refuses to go ``limit`` bytes past where it started."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.end = raw, raw.tell() + limit

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or self.raw.tell() + size > self.end:
            raise _TooLarge()
        data: bytes = self.raw.read(size)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())


@dataclass(frozen=True)
class PixelElement:
    """Where the Pixel Data value starts in ``Header.stream`` and how long it is."""

    value_offset: int
    length: int | None  # None: undefined length (encapsulated)


@dataclass
class Header:
    ds: Any  # a pydicom FileDataset: file meta and every element before Pixel Data
    transfer_syntax: str
    pixel: PixelElement | None
    stream: Any  # positioned at the Pixel Data value: the object's reader, or an inflater over it
    little_endian: bool
    implicit_vr: bool


def read_header(reader: SeekableReader, limit: int = HEADER_LIMIT) -> Header:
    """Parse the object's header; raises HeaderError (the object is then kept as-is)."""
    from pydicom import dcmread
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        bounded = Bounded(reader, 1024 * 1024)
        preamble = read_preamble(bounded, False)  # type: ignore[arg-type]
        file_meta = _read_file_meta_info(bounded)  # type: ignore[arg-type]
        ts = str(file_meta.get("TransferSyntaxUID", "")) or None
    except _TooLarge:
        raise HeaderError("unreadable DICOM: its file meta runs past 1 MiB") from None
    except Exception as exc:
        raise HeaderError(f"unreadable DICOM: {describe_error(exc)}") from exc
    if ts is None:
        raise HeaderError("malformed DICOM: no Transfer Syntax UID in the file meta")
    try:
        if ts == DEFLATED:
            return _read_deflated(reader, preamble, file_meta, limit)
        reader.seek(0)
        ds = dcmread(Bounded(reader, limit), stop_before_pixels=True)
    except _TooLarge:
        raise HeaderError(f"header larger than {limit:,} bytes before Pixel Data: kept as-is") from None
    except HeaderError:
        raise
    except Exception as exc:
        raise HeaderError(f"unreadable DICOM: {describe_error(exc)}") from exc
    implicit, little = ds.original_encoding
    return Header(ds, ts, _pixel_element(reader, bool(little), bool(implicit)), reader, bool(little), bool(implicit))


def _read_deflated(reader: SeekableReader, preamble: bytes | None, file_meta: Any, limit: int) -> Header:
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset

    stream = InflatingReader(reader)
    body = read_dataset(
        Bounded(stream, limit),  # type: ignore[arg-type]
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=lambda tag, vr, length: tag == PIXEL_DATA,
    )
    ds = FileDataset("", body, preamble=preamble, file_meta=file_meta, is_implicit_VR=False, is_little_endian=True)
    ds.set_original_encoding(False, True, body._character_set if hasattr(body, "_character_set") else None)
    return Header(ds, DEFLATED, _pixel_element(stream, True, False), stream, True, False)


def _pixel_element(stream: Any, little: bool, implicit: bool) -> PixelElement | None:
    """Read the Pixel Data element's own header at the stream's position, if it is there."""
    start = stream.tell()
    head = stream.read(8)
    if len(head) < 8:
        return None
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group << 16 | elem) != PIXEL_DATA:
        stream.seek(start)
        return None
    if implicit:
        length = struct.unpack(order + "I", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        length = struct.unpack(order + "I", stream.read(4))[0]
    else:
        length = struct.unpack(order + "H", head[6:8])[0]
    return PixelElement(stream.tell(), None if length == 0xFFFFFFFF else length)


def read_trailer(stream: Any, header: Header, limit: int = HEADER_LIMIT) -> Any:
    """The elements after Pixel Data (a dataset, often empty); raises HeaderError."""
    from pydicom.filereader import read_dataset

    try:
        return read_dataset(
            Bounded(stream, limit),  # type: ignore[arg-type]
            is_implicit_VR=header.implicit_vr,
            is_little_endian=header.little_endian,
        )
    except _TooLarge:
        raise HeaderError(f"more than {limit:,} bytes after Pixel Data: kept as-is") from None
    except Exception as exc:
        raise HeaderError(f"the elements after Pixel Data are unreadable: {describe_error(exc)}") from exc
