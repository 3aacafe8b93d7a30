"""A study folder in S3: listed once, read with ranged-free GETs from several threads."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

from pipeline.study.listing import Ignored, StudyObject
from pipeline.study.source import CHUNK, SourceError, StudySource


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
                rel = item["Key"][len(self.prefix):]
                objects.append(StudyObject(rel, int(item["Size"]), locator=item["Key"], version=item.get("ETag", "").strip('"')))
        return objects, []

    def _get(self, obj: StudyObject) -> Any:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=obj.locator or self.prefix + obj.path)["Body"]
        except Exception as exc:
            from pipeline.aws import error_code, is_transient

            if is_transient(exc):
                raise
            raise SourceError(f"cannot read {obj.path}: {error_code(exc) or type(exc).__name__}") from exc

    def read(self, obj: StudyObject) -> bytes:
        data = self._get(obj).read()
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
