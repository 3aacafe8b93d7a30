"""The quality report as an output: built after the ZIP, beside it, never at the study's expense.

A report that cannot be built leaves the study as it is and says so in the record's warnings
(the study's images are in the ZIP either way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.files.errors import describe_error
from pipeline.study.listing import StudyObject
from pipeline.study.source import StudySource


def _note_failure(record: dict[str, Any], exc: BaseException) -> None:
    record.setdefault("warnings", []).append(f"the quality report could not be built: {describe_error(exc)}")
    if record.get("status") == "succeeded":
        record["status"] = "succeeded_with_warnings"


def write_local_report(record: dict[str, Any], source: StudySource, zip_path: Path) -> Path | None:
    """``OUT.report.html`` next to ``OUT.zip``; its path goes into ``record["output"]["report"]``."""
    from pipeline.report import build_report, report_path

    try:
        path = report_path(zip_path)
        path.write_bytes(build_report(record, source, zip_path))
    except Exception as exc:
        _note_failure(record, exc)
        return None
    record["output"]["report"] = str(path)
    return path


def put_s3_report(
    record: dict[str, Any], source: StudySource, s3: Any, bucket: str, zip_key: str, zip_size: int
) -> str | None:
    """The report next to the record in S3, reading the ZIP back by ranged GETs (only its
    directory and the entries shown); its key goes into ``record["output"]["reportKey"]``."""
    from pipeline.report import build_report, report_name
    from pipeline.study.s3source import RangedReader, S3StudySource

    key = report_name(zip_key)
    try:
        folder, name = zip_key.rsplit("/", 1) if "/" in zip_key else ("", zip_key)
        outputs = S3StudySource(s3, bucket, f"{folder}/" if folder else "")
        with RangedReader(outputs, StudyObject(name, zip_size, locator=zip_key), None) as archive:
            html = build_report(record, source, archive)
        s3.put_object(Bucket=bucket, Key=key, Body=html, ContentType="text/html; charset=utf-8")
    except Exception as exc:
        _note_failure(record, exc)
        return None
    record["output"]["reportKey"] = key
    return key
