"""Where an object's compressed frames wait until the last one is in, so that its offset table
(written before them) can be filled: in memory while small, then in an anonymous temporary file.

The file is unlinked from the moment it exists (``tempfile.TemporaryFile``), so nothing is left
in ``/tmp`` whatever happens to the process, a SIGKILL or an out-of-memory kill included.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

_READ = 1024 * 1024


class FrameSpool:
    """Append frames in order; read them back in order, as often as needed."""

    def __init__(self, memory_limit: int, directory: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.directory = directory
        self._frames: list[bytes] = []
        self._lengths: list[int] = []
        self._in_memory = 0
        self._file: IO[bytes] | None = None
        self.total = 0

    @property
    def on_disk(self) -> int:
        """Bytes written to the temporary file (0 while everything fits in memory)."""
        return self.total if self._file is not None else 0

    @property
    def lengths(self) -> list[int]:
        return self._lengths

    def append(self, frame: bytes) -> None:
        self._lengths.append(len(frame))
        self.total += len(frame)
        if self._file is None and self._in_memory + len(frame) <= self.memory_limit:
            self._frames.append(frame)
            self._in_memory += len(frame)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.directory, prefix="dicom-frames-")
            for held in self._frames:
                self._file.write(held)
            self._frames, self._in_memory = [], 0
        self._file.write(frame)

    def frames(self) -> Iterator[memoryview | bytes]:
        """The frames in order (a big frame read back from disk in one piece: it is one item)."""
        if self._file is None:
            yield from self._frames
            return
        self._file.flush()
        self._file.seek(0)
        for length in self._lengths:
            data = self._file.read(length)
            if len(data) != length:
                raise OSError("the frame spool file is shorter than what was written to it")
            yield data
        self._file.seek(0, 2)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._frames, self._in_memory = [], 0

    def __enter__(self) -> FrameSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
