"""Where a study's bytes come from. The engine sees only this interface; S3 and local folders implement it."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.study.listing import Ignored, StudyObject

CHUNK = 8 * 1024 * 1024


class SourceError(Exception):
    """The study cannot be read; the message names the object, never its content."""


class StudySource(ABC):
    """A study folder: list it once, then read objects (possibly from several threads)."""

    #: Human-readable location (shown in the result record).
    location: str
    #: The study folder's own name (the default ZIP name is built from it).
    name: str

    @abstractmethod
    def list(self) -> tuple[list[StudyObject], list[Ignored]]:
        """All objects under the study folder (paths relative to it), and what was passed over."""

    @abstractmethod
    def read(self, obj: StudyObject) -> bytes:
        """The whole object (used for objects under the engine's per-file limit)."""

    @abstractmethod
    def iter_chunks(self, obj: StudyObject, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object as a stream, for objects too large to hold in memory."""

    @abstractmethod
    def open(self, obj: StudyObject) -> ObjectReader:
        """A seekable reader over the object, for reading its header and then its frames by
        offset without holding it whole. ``finish()`` on it raises SourceError when the bytes
        read do not match the manifest's checksum."""


class ObjectReader:
    """What :meth:`StudySource.open` returns: a buffered binary file plus ``finish``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self._raw.readinto(buffer)  # type: ignore[attr-defined,no-any-return]

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Called once the object has been used: nothing to check by default."""

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text_path(rel: str) -> str:
    """``rel`` as text: name bytes that are not UTF-8 (which ``os.walk`` hands over as lone
    surrogates) are percent-escaped, so the path can go into the ZIP and the JSON record."""
    if not any("\udc80" <= c <= "\udcff" for c in rel):
        return rel
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in rel)


class LocalStudySource(StudySource):
    """A folder on disk. Symlinks are not followed (they could point outside the study)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"study folder not found: {self.root}")
        self.location = str(self.root.resolve())
        self.name = self.root.resolve().name

    def list(self) -> tuple[list[StudyObject], list[Ignored]]:
        objects, ignored = [], []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            for d in dirnames:
                if os.path.islink(os.path.join(dirpath, d)):
                    ignored.append(Ignored(_text_path(prefix + d), "symbolic link to a folder, not followed"))
            for f in filenames:
                full = os.path.join(dirpath, f)
                if os.path.islink(full) or not os.path.isfile(full):
                    ignored.append(Ignored(_text_path(prefix + f), "not a regular file (link or device)"))
                    continue
                objects.append(StudyObject(_text_path(prefix + f), os.path.getsize(full), locator=full))
        return objects, ignored

    def read(self, obj: StudyObject) -> bytes:
        try:
            return Path(obj.locator).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {obj.path}: {exc.strerror}") from exc

    def open(self, obj: StudyObject) -> ObjectReader:
        try:
            return ObjectReader(open(obj.locator, "rb", buffering=1024 * 1024))
        except OSError as exc:
            raise SourceError(f"cannot read {obj.path}: {exc.strerror}") from exc

    def iter_chunks(self, obj: StudyObject, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            with open(obj.locator, "rb") as fh:
                while chunk := fh.read(chunk_size):
                    yield chunk
        except OSError as exc:
            raise SourceError(f"cannot read {obj.path}: {exc.strerror}") from exc
