"""A Deflated Explicit VR Little Endian dataset, inflated as it is read.

pydicom inflates such a file whole on reading, so a 1 MB file whose pixel data inflates to
1 GB costs 1 GB (and more). This reader inflates only as far as it is read, keeps a short
history for the few bytes pydicom steps back while parsing, and never holds more than that.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

_CHUNK = 256 * 1024
#: Bytes kept behind the read position: pydicom seeks back over an element header at most.
HISTORY = 64 * 1024


class Readable(Protocol):
    """What the inflater reads from (a file, a ZIP entry, an object reader)."""

    def read(self, size: int = -1, /) -> bytes: ...


class InflateError(OSError):
    """The deflate stream is corrupt, or a backward seek went past the history."""


class InflatingReader:
    """Read-only, forward file over the raw-deflated bytes that follow ``raw``'s position."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()  # inflated bytes from _base on: history, then unread
        self._base = 0  # inflated offset of _buf[0]
        self._pos = 0
        self.ended = False  # the deflate stream's own end was reached

    def _fill(self, upto: int) -> None:
        """Inflate until ``upto`` bytes (absolute) are available, or the stream ends."""
        while self._base + len(self._buf) < upto and not self.ended:
            if self._inflater.unconsumed_tail:
                data = self._inflater.unconsumed_tail
            else:
                data = self._raw.read(_CHUNK)
                if not data:
                    self.ended = True  # the raw bytes ran out (a stream cut short ends here too)
                    break
            try:
                self._buf += self._inflater.decompress(data, max(upto - self._base - len(self._buf), _CHUNK))
            except zlib.error as exc:
                raise InflateError(f"the deflated dataset is corrupt: {exc}") from exc
            if self._inflater.eof:
                self.ended = True
        keep_from = max(0, self._pos - HISTORY - self._base)
        if keep_from > _CHUNK:  # drop history in large steps: bytearray deletion moves the rest
            del self._buf[:keep_from]
            self._base += keep_from

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise InflateError("reading a deflated dataset to its end is not allowed (it may be a deflate bomb)")
        self._fill(self._pos + size)
        start = self._pos - self._base
        data = bytes(self._buf[start : start + size])
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence != os.SEEK_SET:
            raise InflateError("a deflated dataset has no known end to seek from")
        if offset < self._base:
            raise InflateError("seek back beyond the inflated history")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
