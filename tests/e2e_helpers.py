"""Shared helpers for the handler (in-process moto) and end-to-end (moto server) tests.

Nothing here mocks the pipeline: it creates AWS resources the way ``devstack.stack``
does, uploads real DICOM files, reads what the worker wrote and what it announced.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote_plus

import pydicom
import pytest

from devstack.stack import REGION, LocalStack, provision

SOURCE = "dicom.compression"
COMPRESSED = "Study Compressed"
FAILED = "Study Compression Failed"
#: Keys every event detail has (see pipeline/notify/eventbridge.py).
DETAIL_KEYS = {"status", "study", "output", "settings", "inputFingerprint", "metadata"}
#: The totals an event carries; the per-file list and pixel byte counts stay in the record.
EVENT_TOTAL_KEYS = {"files", "compressed", "kept", "fileWarnings", "bytesIn", "bytesOut", "ratio", "pixelRatio", "floorInterventions"}

#: The fixture study's files in the order a viewer must read them (natural, per component).
FIXTURE_ORDER = [
    "CT1/01.dcm", "CT1/02.dcm", "CT1/03.dcm", "CT1/04.dcm",
    "CT2/I10", "CT2/I20", "CT2/I30", "CT2/I40", "CT2/I50", "CT2/I100",
    "report/test-SR.dcm",
]

#: Small real MR/CR slices (16x16) from the corpus, copied under names whose natural order
#: differs from their byte order ("IM2" < "IM10"), in nested folders.
SMALL_STUDY = {
    "MR1/IM10": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/5641",
    "MR1/IM2": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/15820",
    "MR1/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/4919",
    "MR10/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR2/6273",
    "MR9/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR700/4528",
}
SMALL_ORDER = ["MR1/IM1", "MR1/IM2", "MR1/IM10", "MR9/IM1", "MR10/IM1"]


def make_small_study(corpus: Path, dest: Path, names: Iterable[str] | None = None) -> Path:
    """Copy (some of) :data:`SMALL_STUDY` from the corpus into ``dest``."""
    for name in names or SMALL_STUDY:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / SMALL_STUDY[name], target)
        target.chmod(0o644)
    return dest


def copy_study(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def study_files(root: Path) -> dict[str, bytes]:
    """Relative POSIX path -> bytes, for every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def natural_order(paths: Iterable[str]) -> list[str]:
    """An independent natural sort (per path component, digit runs by value)."""

    def key(path: str) -> list[list[tuple[int, Any]]]:
        return [
            [(0, int(c)) if c.isdigit() else (1, c.casefold()) for c in re.split(r"(\d+)", comp) if c]
            for comp in path.split("/")
        ]

    return sorted(paths, key=key)


def zip_entries(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return [i.filename for i in zf.infolist()]


def phi_values(root: Path) -> set[str]:
    """Identifying header values of the DICOM files under ``root`` (long enough to be specific)."""
    values: set[str] = set()
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
                   "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "ReferringPhysicianName"):
            v = ds.get(kw)
            if v is not None and len(str(v)) >= 4:
                values.add(str(v))
    return values


# --------------------------------------------------------------------------- resources


def create_resources(s3: Any, sqs: Any, events: Any, *, visibility_timeout: int = 30, max_receives: int = 3) -> LocalStack:
    """The local stack's resources, through the given clients (for mock_aws)."""
    return provision(s3, sqs, events, prefix="dicom-compression-test", visibility_timeout=visibility_timeout,
                     max_receives=max_receives)


def worker_env(stack: LocalStack) -> dict[str, str]:
    """The worker's environment for ``stack`` (without an endpoint: for mock_aws)."""
    env = stack.env()
    env.pop("AWS_ENDPOINT_URL")
    env["AWS_REGION"] = REGION
    env["AWS_SECURITY_TOKEN"] = "testing"
    env["AWS_SESSION_TOKEN"] = "testing"
    return env


def upload(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=data)


def manifest_for(files: dict[str, bytes], **options: Any) -> bytes:
    doc = {**options, "files": [{"path": p, "size": len(d), "sha256": sha256(d)} for p, d in files.items()]}
    return json.dumps(doc).encode()


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def communicate_or_fail(proc: subprocess.Popen[str], timeout: float, what: str) -> tuple[str, str]:
    """``proc.communicate()``, but a hang kills its whole process group and fails the test
    (``proc`` must be started with ``start_new_session=True``). A guard, not a speed limit."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what} did not finish (hang guard)")


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now visible on ``queue_url`` (deleted as read)."""
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(m)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def s3_notification(bucket: str, key: str, *, event_name: str = "ObjectCreated:Put", size: int = 0) -> dict[str, Any]:
    """An S3 event notification as S3 (and moto) sends it: the key ``quote_plus``-encoded."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2025-08-27T10:00:00.000Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "192.0.2.1"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "study-marker-_READY",
                    "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                               "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key), "size": size, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                               "sequencer": "0055AED6DCD90281E5"},
                },
            }
        ]
    }


@dataclass
class Event:
    """One EventBridge event as it reached the notification queue."""

    raw: dict[str, Any]

    @property
    def detail_type(self) -> str:
        return self.raw["detail-type"]

    @property
    def detail(self) -> dict[str, Any]:
        return self.raw["detail"]

    @property
    def prefix(self) -> str:
        return self.detail["study"]["prefix"]


def read_events(sqs: Any, note_url: str) -> list[Event]:
    return [Event(json.loads(m["Body"])) for m in drain(sqs, note_url)]


def check_event_shape(event: Event, *, bucket: str) -> None:
    """The documented shape of a ``Study Compressed`` / ``Study Compression Failed`` event."""
    raw = event.raw
    assert raw["source"] == SOURCE
    assert raw["detail-type"] in (COMPRESSED, FAILED)
    detail = event.detail
    assert DETAIL_KEYS <= set(detail), sorted(detail)
    assert "files" not in detail
    assert set(detail["study"]) == {"bucket", "prefix", "marker"}
    assert detail["study"]["bucket"] == bucket
    assert detail["study"]["marker"] in ("_READY", "manifest.json")
    assert set(detail["output"]) == {"bucket", "zipKey", "recordKey"}
    assert detail["output"]["zipKey"].endswith(".zip")
    assert detail["output"]["recordKey"] == detail["output"]["zipKey"][: -len(".zip")] + ".result.json"
    if raw["detail-type"] == COMPRESSED:
        assert detail["status"] in ("succeeded", "succeeded_with_warnings")
        assert set(detail["totals"]) == EVENT_TOTAL_KEYS
        assert set(detail["verification"]) == {"bitExact", "lossy", "minPsnrDb", "minRangePsnrDb", "maxAbsError"}
        assert detail.get("error") is None  # README shows "error": null; the code leaves it out
        assert set(detail["settings"]) == {"mode", "rate", "codec", "verify", "minPsnrDb"}
    else:
        assert detail["status"] == "failed"
        assert set(detail["error"]) == {"code", "message"}
