"""Lambda's time limit: a study that cannot finish fails cleanly instead of being cut off.

In-process (the real handler, on the moto server) with a Lambda context whose
``get_remaining_time_in_millis`` is a fake clock:

- too little time from the start: the study fails before any encoding ("study too large for
  the configured timeout: N files, M bytes"), with a record and a ``Study Compression Failed``;
- time running out mid-study, once the ZIP is already a multipart upload: the same clean
  failure, the upload aborted, nothing at the ZIP key, the lock released.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from devstack.poller import LambdaContext, poll_once
from pipeline.aws import client
from pipeline.job.deadline import SAFETY_MARGIN_MS
from tests.helpers.aws import drop_pending, get_bytes, get_record, open_uploads, queue_counts, upload
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts
from tests.helpers.s3_faults import S3Faults
from tests.helpers.studies import make_ct_study, study_files

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

OBSERVED = ["PutObject", "CreateMultipartUpload", "UploadPart", "AbortMultipartUpload", "CompleteMultipartUpload"]


class ClockContext(LambdaContext):
    """A Lambda context on a fake clock: ``start_ms`` left, minus ``tick_ms`` at every reading."""

    def __init__(self, start_ms: int, tick_ms: int = 0) -> None:
        super().__init__(900)
        self.left, self.tick, self.readings = start_ms, tick_ms, 0

    def get_remaining_time_in_millis(self) -> int:
        self.readings += 1
        left, self.left = self.left, max(0, self.left - self.tick)
        return left


def _invoke(stack: Any, context: ClockContext) -> int:
    from handlers.worker import handler

    return poll_once(stack.queue_url, lambda event, _ctx: handler(event, context), wait_seconds=1, retry_delay=1)


def _check_clean_failure(
    stack: Any, events: EventLog, prefix: str, study_path: str, files: dict[str, bytes], facts: Facts, case: str
) -> dict[str, Any]:
    s3, sqs = client("s3"), client("sqs")
    zip_key, record_key = f"compressed/{study_path}.zip", f"compressed/{study_path}.result.json"
    record = get_record(s3, stack.bucket, record_key)
    assert record is not None and record["status"] == "failed"
    assert record["error"]["code"] == "StudyTooLarge"
    expected = (
        f"study too large for the configured timeout: {len(files)} files, {sum(map(len, files.values())):,} bytes"
    )
    assert record["error"]["message"].startswith(expected), record["error"]["message"]
    facts.equal(f"timeout.{case}.message", record["error"]["message"][: len(expected)], expected)
    [event] = events.for_prefix(prefix)
    assert event["detail-type"] == "Study Compression Failed"
    facts.equal(f"timeout.{case}.failure_events", len(events.for_prefix(prefix)), 1)
    assert event["detail"]["error"] == record["error"]
    assert get_bytes(s3, stack.bucket, zip_key) is None
    assert get_bytes(s3, stack.bucket, zip_key + ".lock") is None
    assert open_uploads(s3, stack.bucket) == []
    # A permanent failure: the message is deleted, not retried until the DLQ.
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []
    return record


def test_too_little_time_fails_before_any_encoding(
    stack: Any, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, facts: Facts
) -> None:
    from pipeline import engine  # the job imports compress_study from it at its first study

    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    files = study_files(make_ct_study(corpus, tmp_path / "study", facts.setup("timeout.short.slices", 6)))
    prefix = "incoming/timeout/short/"
    upload(s3, stack.bucket, prefix, files)
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    encoded: list[Any] = []
    real = engine.compress_study
    monkeypatch.setattr(engine, "compress_study", lambda *a, **k: encoded.append(a) or real(*a, **k))

    facts.setup("timeout.safety_margin_ms", SAFETY_MARGIN_MS, unit="ms")
    # Less time left than the safety margin alone.
    context = ClockContext(facts.bound("timeout.short.ms_left", 20_000, "<", SAFETY_MARGIN_MS, unit="ms"))
    with S3Faults(client("s3"), OBSERVED, lambda op, req: None) as seen:
        assert _invoke(stack, context) == 1

    _check_clean_failure(stack, events, prefix, "timeout/short", files, facts, "short")
    assert context.readings >= 1
    facts.equal("timeout.short.compress_study_calls", len(encoded), 0)  # fails before any encoding
    written = [url for op, url, _ in seen.log if op == "PutObject"]
    facts.equal("timeout.short.lock_puts", sum(".lock" in url for url in written), 0)  # no lock taken
    facts.equal("timeout.short.multipart_calls", seen.calls["CreateMultipartUpload"] + seen.calls["UploadPart"], 0)


def test_time_running_out_mid_study_aborts_the_upload(stack: Any, corpus: Path, tmp_path: Path, facts: Facts) -> None:
    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    root = make_ct_study(corpus, tmp_path / "study", facts.setup("timeout.mid.slices", 12))
    # Two incompressible 5 MiB blobs first in ZIP order: the ZIP is a multipart upload by file 2.
    (root / "A").mkdir()
    blob_mib = facts.setup("timeout.mid.blob_mib", 5, unit="MiB")
    for i in range(1, facts.setup("timeout.mid.blobs", 2) + 1):
        (root / "A" / f"blob{i}.gz").write_bytes(os.urandom(blob_mib * 1024 * 1024))
    files = study_files(root)
    prefix = "incoming/timeout/mid/"
    upload(s3, stack.bucket, prefix, files)
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")

    # 36 s left, one second less at each look: enough for the up-front estimate (~32 s with
    # the 30 s margin), then below the margin after about six files of fourteen.
    context = ClockContext(
        facts.setup("timeout.mid.ms_left", 36_000, unit="ms"),
        tick_ms=facts.setup("timeout.mid.tick_ms", 1_000, unit="ms"),
    )
    with S3Faults(client("s3"), OBSERVED, lambda op, req: None) as seen:
        assert _invoke(stack, context) == 1

    record = _check_clean_failure(stack, events, prefix, "timeout/mid", files, facts, "mid")
    done = int(re.search(r"\((\d+) done when time ran out\)", record["error"]["message"]).group(1))
    facts.within("timeout.mid.files_done", done, 2, len(files))
    # The ZIP had become a multipart upload, and it was aborted, not completed.
    facts.equal("timeout.mid.uploads_created", seen.calls["CreateMultipartUpload"], 1)
    facts.bound("timeout.mid.abort_calls", seen.calls["AbortMultipartUpload"], ">=", 1)
    facts.equal("timeout.mid.complete_calls", seen.calls["CompleteMultipartUpload"], 0)
    zip_puts = [url for op, url, _ in seen.log if op == "PutObject" and url.split("?")[0].endswith(".zip")]
    facts.equal("timeout.mid.zip_puts", len(zip_puts), 0)
