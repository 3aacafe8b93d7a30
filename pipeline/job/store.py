"""The job's S3 reads and writes besides the study itself: its manifest, its result record."""

from __future__ import annotations

from typing import Any

from pipeline.aws import error_code
from pipeline.job.errors import RetryLater, StudyFailed
from pipeline.outputs.record import SUCCEEDED, SUCCEEDED_WITH_WARNINGS
from pipeline.outputs.s3 import get_json, put_json
from pipeline.study.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, parse_manifest
from pipeline.trigger.events import StudyTrigger


def read_manifest(s3: Any, trigger: StudyTrigger) -> Manifest | None:
    """The study's manifest.json, or None when it has none (a ``_READY`` study)."""
    key = trigger.study_prefix + "manifest.json"
    try:
        head = s3.head_object(Bucket=trigger.bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            if trigger.marker == "manifest.json":
                raise RetryLater("manifest.json announced but not readable yet") from exc
            return None
        raise
    if head["ContentLength"] > MAX_MANIFEST_BYTES:
        raise StudyFailed(
            "InvalidManifest", f"manifest.json is {head['ContentLength']:,} bytes; the limit is {MAX_MANIFEST_BYTES:,}"
        )
    raw = s3.get_object(Bucket=trigger.bucket, Key=key)["Body"].read()
    try:
        return parse_manifest(raw)
    except ManifestError as exc:
        raise StudyFailed("InvalidManifest", str(exc)) from exc


class RecordStore:
    """Result records in the target bucket; a final record is written last and never replaced
    by a later failure."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def get(self, key: str) -> dict[str, Any] | None:
        return get_json(self.s3, self.bucket, key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        put_json(self.s3, self.bucket, key, record)

    def finished(self, key: str) -> dict[str, Any] | None:
        """The record at ``key`` when it is a final (succeeded) one."""
        existing = self.get(key)
        return existing if existing and existing.get("status") in (SUCCEEDED, SUCCEEDED_WITH_WARNINGS) else None

    def put_failure(self, key: str, record: dict[str, Any]) -> None:
        """A finished study's record describes its ZIP: a later failed trigger must not replace it."""
        if self.finished(key) is None:
            self.put(key, record)
