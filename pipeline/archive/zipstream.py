"""Deterministic, forward-only ZIP writer (one archive per study).

The sink is write-only (an S3 multipart upload cannot seek), so every header is
written exactly once: sizes unknown up front go into a data descriptor, and the
central directory is kept in memory (tens of bytes per entry) until ``close``.
Nothing depends on the clock or on randomness, so the same calls always give the
same bytes and the archive's sha256 can serve as its content identity.
Format references are to PKWARE's APPNOTE.TXT 6.3.x.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

__all__ = [
    "SupportsWrite",
    "UnsafeEntryName",
    "ZipEntryInfo",
    "ZipStreamWriter",
    "ZipSummary",
    "check_entry_name",
]

_U16, _U32 = 0xFFFF, 0xFFFFFFFF  # field maxima; the maxima themselves are the ZIP64 markers
_DOS_TIME, _DOS_DATE = 0, (1 << 5) | 1  # 1980-01-01 00:00:00, the earliest DOS date
_UNIX, _V20, _V45 = 3, 20, 45  # host system; spec versions for deflate and ZIP64
_FILE_ATTR = 0o100644 << 16  # regular file, rw-r--r--
_FLAG_DESCRIPTOR, _FLAG_UTF8 = 1 << 3, 1 << 11
_STORED, _DEFLATED = 0, 8
_LEVEL, _WBITS = 6, -15  # raw deflate, as zip stores it
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_DRIVE = re.compile(r"[A-Za-z]:")


class SupportsWrite(Protocol):
    # Memoryviews too: ``add_sized`` hands its chunks (slices of a spool) over without a copy.
    def write(self, data: bytes | memoryview, /) -> object: ...


class UnsafeEntryName(ValueError):
    """An entry name that could escape or collide on extraction; never rewritten."""


@dataclass(frozen=True)
class ZipEntryInfo:
    name: str
    offset: int  # of the local header
    crc32: int
    compressed_size: int
    file_size: int
    method: Literal["stored", "deflated"]


@dataclass(frozen=True)
class ZipSummary:
    size: int
    sha256: str  # hex digest of the whole archive
    entries: int
    zip64: bool  # ZIP64 end records were written


def check_entry_name(name: str) -> str:
    """Return ``name`` if every extractor will place it inside the target
    directory as exactly that relative path; raise UnsafeEntryName otherwise.
    Duplicates are the writer's job (they need the archive's state)."""
    if not isinstance(name, str) or not name:
        raise UnsafeEntryName("entry name must be a non-empty str")
    if name.startswith("/"):
        raise UnsafeEntryName(f"absolute entry name: {name!r}")
    if "\\" in name:  # a path separator on Windows, so 'a\\..\\..\\x' escapes there
        raise UnsafeEntryName(f"backslash in entry name: {name!r}")
    if _DRIVE.match(name):
        raise UnsafeEntryName(f"drive letter in entry name: {name!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UnsafeEntryName(f"control character in entry name: {name!r}")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeEntryName(
                f"empty, '.' or '..' component in entry name (directory entries are not supported either): {name!r}"
            )
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise UnsafeEntryName(f"entry name is not valid Unicode: {name!r}") from exc
    if len(encoded) > _U16:
        raise UnsafeEntryName(f"entry name is {len(encoded)} bytes in UTF-8, max {_U16}")
    return name


class ZipStreamWriter:
    """Write a ZIP to a forward-only sink; bytes depend only on the entries added.

    The sink is only ever called with ``write``; the writer hashes and counts
    what it writes, so the caller gets size and sha256 without re-reading.
    Any error while an entry is half-written leaves the writer unusable, and
    leaving a ``with`` block by an exception writes no central directory: a
    truncated study must not look like a valid archive.
    """

    def __init__(self, sink: SupportsWrite) -> None:
        self._sink = sink
        self._sha = hashlib.sha256()
        self._written = 0
        self._central: list[bytes] = []
        self._names: set[str] = set()
        self._needs_zip64 = False
        self._summary: ZipSummary | None = None
        self._broken = False

    @property
    def bytes_written(self) -> int:
        return self._written

    def add_bytes(self, name: str, data: bytes, *, deflate: bool = False) -> ZipEntryInfo:
        """Add an in-memory entry: CRC and sizes go in the local header, so even
        the simplest streaming readers can extract it. Stored unless ``deflate``,
        and stored anyway when deflating would not shrink it (e.g. JPEG 2000).
        Any bytes-like ``data`` works; stored data is passed to the sink as is."""
        encoded, flags = self._claim(name)
        crc, size, method, payload = zlib.crc32(data), len(data), _STORED, data
        if deflate:
            packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS)
            packed = packer.compress(data) + packer.flush()
            if len(packed) < size:
                method, payload = _DEFLATED, packed
        offset, csize = self._written, len(payload)
        big = size >= _U32 or csize >= _U32
        # A ZIP64 local extra must carry both sizes (APPNOTE 4.5.3).
        extra = struct.pack("<HHQQ", 1, 16, size, csize) if big else b""
        version = _V45 if big or offset >= _U32 else _V20
        with self._guard():
            self._write(
                _LOCAL.pack(
                    0x04034B50,
                    version,
                    flags,
                    method,
                    _DOS_TIME,
                    _DOS_DATE,
                    crc,
                    min(csize, _U32),
                    min(size, _U32),
                    len(encoded),
                    len(extra),
                )
                + encoded
                + extra
            )
            self._write(payload)
        return self._record(name, encoded, version, flags, method, crc, csize, size, offset)

    def add_sized(self, name: str, chunks: Iterable[bytes | memoryview], *, size: int, crc32: int) -> ZipEntryInfo:
        """Add a STORED entry whose size and CRC the caller already knows (an object assembled
        from a spool it can read twice), holding one chunk at a time: like ``add_bytes``, the
        local header carries them, so streaming readers can extract it. The chunks must add up
        to exactly ``size`` bytes with ``crc32``, or the writer fails (the archive would lie)."""
        encoded, flags = self._claim(name)
        offset = self._written
        big = size >= _U32
        extra = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
        version = _V45 if big or offset >= _U32 else _V20
        crc = written = 0
        with self._guard():
            self._write(
                _LOCAL.pack(
                    0x04034B50,
                    version,
                    flags,
                    _STORED,
                    _DOS_TIME,
                    _DOS_DATE,
                    crc32,
                    min(size, _U32),
                    min(size, _U32),
                    len(encoded),
                    len(extra),
                )
                + encoded
                + extra
            )
            for chunk in chunks:
                crc, written = zlib.crc32(chunk, crc), written + len(chunk)
                self._write(chunk)
            if (written, crc) != (size, crc32):
                raise ValueError(
                    f"entry {name!r}: the chunks gave {written} bytes with CRC {crc:08x}, "
                    f"not the {size} bytes with CRC {crc32:08x} announced"
                )
        return self._record(name, encoded, version, flags, _STORED, crc32, size, size, offset)

    def add_stream(
        self, name: str, chunks: Iterable[bytes], *, deflate: bool = True, level: int = _LEVEL
    ) -> ZipEntryInfo:
        """Add an entry of unknown size, holding one chunk at a time.

        The local header has flag bit 3 and a ZIP64 extra with zero sizes (the
        size is unknown, and may exceed 4 GiB), and a data descriptor with
        8-byte sizes follows the data (APPNOTE 4.3.9, 4.5.3). It must be
        deflated: a streaming reader finds the end of deflate data from the
        data itself, but STORED data has no end marker and its size is only in
        the descriptor after it; Java's ZipInputStream rejects such entries and
        other streaming readers guess by scanning for the descriptor signature,
        which the data itself may contain. ``level=0`` writes deflate's stored blocks: no
        compression work at all, for large data that deflate would not shrink.
        """
        if not deflate:
            raise ValueError(
                "add_stream requires deflate: STORED entries with a data "
                "descriptor cannot be read by streaming unzippers"
            )
        encoded, flags = self._claim(name)
        flags |= _FLAG_DESCRIPTOR
        offset = self._written
        crc = size = csize = 0
        with self._guard():
            self._write(
                _LOCAL.pack(0x04034B50, _V45, flags, _DEFLATED, _DOS_TIME, _DOS_DATE, 0, 0, 0, len(encoded), 20)
                + encoded
                + struct.pack("<HHQQ", 1, 16, 0, 0)
            )
            packer = zlib.compressobj(level, zlib.DEFLATED, _WBITS)
            for chunk in chunks:
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
                out = packer.compress(chunk)
                csize += len(out)
                self._write(out)
            out = packer.flush()
            csize += len(out)
            self._write(out)
            self._write(struct.pack("<IIQQ", 0x08074B50, crc, csize, size))
        return self._record(name, encoded, _V45, flags, _DEFLATED, crc, csize, size, offset)

    def close(self) -> ZipSummary:
        """Write the central directory and end records; later calls return the
        same summary. Does not close the sink, which the caller owns."""
        if self._summary is not None:
            return self._summary
        self._check_usable()
        with self._guard():
            cd_offset = self._written
            self._write(b"".join(self._central))
            cd_size, count = self._written - cd_offset, len(self._central)
            # Any entry with a central ZIP64 extra makes a ZIP64 archive (as Info-ZIP
            # zip does); otherwise only end-record fields that would overflow do.
            zip64 = self._needs_zip64 or count >= _U16 or cd_size >= _U32 or cd_offset >= _U32
            if zip64:  # ZIP64 end record + locator (APPNOTE 4.3.14, 4.3.15)
                end64 = self._written
                self._write(
                    struct.pack(
                        "<IQHHIIQQQQ", 0x06064B50, 44, _UNIX << 8 | _V45, _V45, 0, 0, count, count, cd_size, cd_offset
                    )
                )
                self._write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
            # Only the fields that overflow get the 0xFFFF/0xFFFFFFFF marker (4.4.1.4).
            self._write(
                struct.pack(
                    "<IHHHHIIH",
                    0x06054B50,
                    0,
                    0,
                    min(count, _U16),
                    min(count, _U16),
                    min(cd_size, _U32),
                    min(cd_offset, _U32),
                    0,
                )
            )
        self._central.clear()
        self._summary = ZipSummary(self._written, self._sha.hexdigest(), count, zip64)
        return self._summary

    def __enter__(self) -> ZipStreamWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._broken = True

    def _check_usable(self) -> None:
        if self._summary is not None:
            raise RuntimeError("ZIP writer is closed")
        if self._broken:
            raise RuntimeError("ZIP writer failed part-way; the archive is incomplete")

    def _claim(self, name: str) -> tuple[bytes, int]:
        self._check_usable()
        check_entry_name(name)
        if name in self._names:
            raise UnsafeEntryName(f"duplicate entry name: {name!r}")
        return name.encode("utf-8"), 0 if name.isascii() else _FLAG_UTF8

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._broken = True
            raise

    def _write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._sha.update(data)
        self._written += len(data)
        accepted = self._sink.write(data)
        if isinstance(accepted, int) and accepted < len(data):
            raise OSError(f"short write: sink took {accepted} of {len(data)} bytes")

    def _record(
        self,
        name: str,
        encoded: bytes,
        version: int,
        flags: int,
        method: int,
        crc: int,
        csize: int,
        size: int,
        offset: int,
    ) -> ZipEntryInfo:
        # ZIP64 extra with only the overflowed fields, in APPNOTE 4.5.3 order.
        big = [v for v in (size, csize, offset) if v >= _U32]
        extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
        self._needs_zip64 |= bool(big)
        self._names.add(name)
        self._central.append(
            _CENTRAL.pack(
                0x02014B50,
                _UNIX << 8 | version,
                version,
                flags,
                method,
                _DOS_TIME,
                _DOS_DATE,
                crc,
                min(csize, _U32),
                min(size, _U32),
                len(encoded),
                len(extra),
                0,
                0,
                0,
                _FILE_ATTR,
                min(offset, _U32),
            )
            + encoded
            + extra
        )
        return ZipEntryInfo(name, offset, crc, csize, size, "deflated" if method == _DEFLATED else "stored")
