"""A study folder in S3: listed once; small objects read whole from several threads, large
ones by ranged GETs (a block ahead on a thread of their own), never whole."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pipeline.study.listing import Ignored, StudyObject
from pipeline.study.source import CHUNK, ObjectReader, SourceError, StudySource

#: Bytes per ranged GET: large enough that request overhead is small, small enough that the
#: block being read plus the one being fetched stay a small part of the memory budget.
RANGE_BLOCK = 2 * 1024 * 1024


class S3StudySource(StudySource):
    """Objects under ``s3://bucket/prefix`` (prefix ends with ``/``)."""

    def __init__(self, s3: Any, bucket: str, prefix: str, *, checksums: dict[str, str] | None = None) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.location = f"s3://{bucket}/{prefix}"
        self.name = prefix.rstrip("/").rsplit("/", 1)[-1]
        #: Expected sha256 per relative path (from the manifest), checked as objects are read.
        self.checksums = checksums or {}

    def list(self) -> tuple[list[StudyObject], list[Ignored]]:
        objects: list[StudyObject] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(self.prefix) :]
                objects.append(
                    StudyObject(rel, int(item["Size"]), locator=item["Key"], version=item.get("ETag", "").strip('"'))
                )
        return objects, []

    def open(self, obj: StudyObject) -> ObjectReader:
        return RangedReader(self, obj, self.checksums.get(obj.path))

    def _get(self, obj: StudyObject, byte_range: str | None = None) -> Any:
        extra = {"Range": byte_range} if byte_range else {}
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=obj.locator or self.prefix + obj.path, **extra)["Body"]
        except Exception as exc:
            from pipeline.aws import error_code, is_transient

            if is_transient(exc):
                raise
            raise SourceError(f"cannot read {obj.path}: {error_code(exc) or type(exc).__name__}") from exc

    def read(self, obj: StudyObject) -> bytes:
        data: bytes = self._get(obj).read()
        expected = self.checksums.get(obj.path)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise SourceError(f"{obj.path} does not match the sha256 in manifest.json")
        return data

    def iter_chunks(self, obj: StudyObject, chunk_size: int = CHUNK) -> Iterator[bytes]:
        digest = hashlib.sha256()
        for chunk in self._get(obj).iter_chunks(chunk_size):
            digest.update(chunk)
            yield chunk
        expected = self.checksums.get(obj.path)
        if expected and digest.hexdigest() != expected:
            raise SourceError(f"{obj.path} does not match the sha256 in manifest.json")


class RangedReader(ObjectReader):
    """A seekable file over one S3 object, in blocks of RANGE_BLOCK fetched by ranged GETs, the
    next block fetched while this one is read. Bytes are hashed in order as blocks are first
    fetched; ``finish`` fetches whatever was skipped and checks the manifest's sha256."""

    def __init__(self, source: S3StudySource, obj: StudyObject, sha256: str | None, block: int = RANGE_BLOCK) -> None:
        self.source, self.obj, self.size, self.block = source, obj, obj.size, block
        self._expected = sha256
        self._digest = hashlib.sha256() if sha256 else None
        self._hashed = 0  # blocks hashed, in order
        self._pos = 0
        self._current: tuple[int, bytes] = (-1, b"")
        self._ahead: tuple[int, Future[bytes]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="range")

    def _fetch(self, index: int) -> bytes:
        start = index * self.block
        end = min(self.size, start + self.block) - 1
        data: bytes = self.source._get(self.obj, f"bytes={start}-{end}").read()
        if len(data) != end - start + 1:
            raise SourceError(
                f"cannot read {self.obj.path}: a ranged read returned {len(data):,} of {end - start + 1:,} bytes"
            )
        return data

    def _block(self, index: int) -> bytes:
        if self._current[0] == index:
            return self._current[1]
        if self._ahead and self._ahead[0] == index:
            data = self._ahead[1].result()
        else:
            if self._ahead:
                self._ahead[1].cancel()
            data = self._fetch(index)
        self._ahead = None
        if (index + 1) * self.block < self.size:
            self._ahead = (index + 1, self._pool.submit(self._fetch, index + 1))
        if self._digest is not None and index == self._hashed:
            self._digest.update(data)
            self._hashed += 1
        self._current = (index, data)
        return data

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        parts = []
        while self._pos < end:
            index, offset = divmod(self._pos, self.block)
            data = self._block(index)
            piece = data[offset : offset + end - self._pos]
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def finish(self) -> None:
        if self._digest is None:
            return
        blocks = -(-self.size // self.block)
        while self._hashed < blocks:
            self._block(self._hashed)
        if self._digest.hexdigest() != self._expected:
            raise SourceError(f"{self.obj.path} does not match the sha256 in manifest.json")

    def close(self) -> None:
        if self._ahead:
            self._ahead[1].cancel()
        self._pool.shutdown(wait=True)
        self._current, self._ahead = (-1, b""), None
