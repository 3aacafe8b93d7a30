"""The worker Lambda handler on in-process moto (``mock_aws``): SQS batch in, ZIP + record + event out.

Resources are the ones ``devstack.stack`` creates (bucket with the marker notification,
study queue + DLQ, bus + rule -> notification queue); the S3 notifications are the ones moto
itself put on the study queue, handed to ``handlers.worker.handler`` in Lambda's SQS event shape.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from devstack.poller import LambdaContext, sqs_event
from devstack.stack import LocalStack
from pipeline.aws import client, reset_clients
from tests.helpers.aws import create_resources, get_bytes, upload, worker_env
from tests.helpers.events import COMPRESSED, FAILED, Event, check_event_shape, read_events
from tests.helpers.studies import (
    FIXTURE_ORDER,
    SMALL_ORDER,
    make_small_study,
    manifest_for,
    phi_values,
    sha256,
    study_files,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


@dataclass
class Aws:
    stack: LocalStack
    s3: Any
    sqs: Any
    handler: Any
    queue_arn: str
    events: list[Event]

    # ------------------------------------------------------------------ queue side
    def receive(self, n: int = 10) -> list[dict[str, Any]]:
        """Visible messages on the study queue (left in flight, as Lambda's poller leaves them)."""
        resp = self.sqs.receive_message(QueueUrl=self.stack.queue_url, MaxNumberOfMessages=n, AttributeNames=["All"])
        return resp.get("Messages", [])

    def receive_one(self) -> dict[str, Any]:
        msgs = self.receive(1)
        assert len(msgs) == 1, msgs
        return msgs[0]

    def invoke(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the handler on a Lambda-shaped SQS event made of ``messages``; returns its response."""
        return self.handler(sqs_event(messages, self.queue_arn), LambdaContext(900))

    def settle(self, messages: list[dict[str, Any]], failed_ids: set[str]) -> None:
        """What Lambda's SQS poller does afterwards: delete successes, make failures visible again."""
        for m in messages:
            if m["MessageId"] in failed_ids:
                self.sqs.change_message_visibility(
                    QueueUrl=self.stack.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.sqs.delete_message(QueueUrl=self.stack.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def run(self, messages: list[dict[str, Any]]) -> set[str]:
        """Invoke + settle; an exception from the handler fails the whole batch (as in Lambda)."""
        try:
            failed = {f["itemIdentifier"] for f in self.invoke(messages)["batchItemFailures"]}
        except Exception:
            failed = {m["MessageId"] for m in messages}
        self.settle(messages, failed)
        return failed

    # ------------------------------------------------------------------ bucket side
    def submit(self, prefix: str, files: dict[str, bytes], marker: str = "_READY", marker_body: bytes = b"") -> None:
        upload(self.s3, self.stack.bucket, prefix, files)
        self.s3.put_object(Bucket=self.stack.bucket, Key=prefix + marker, Body=marker_body)

    def get(self, key: str) -> bytes | None:
        return get_bytes(self.s3, self.stack.bucket, key)

    def record(self, key: str) -> dict[str, Any]:
        data = self.get(key)
        assert data is not None, f"no record at {key}"
        return json.loads(data)

    def new_events(self, prefix: str) -> list[Event]:
        """Events that reached the notification queue since the last call, for study ``prefix``."""
        self.events.extend(read_events(self.sqs, self.stack.notification_queue_url))
        mine = [e for e in self.events if e.prefix == prefix]
        self.events[:] = [e for e in self.events if e.prefix != prefix]
        return mine

    def dlq(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.stack.dlq_url, MaxNumberOfMessages=10).get("Messages", [])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ("TARGET_BUCKET", "WORKERS", "COMPRESSION_RATE", "CODEC", "VERIFY"):
            monkeypatch.delenv(name)
    probe = LocalStack("", "dicom-compression-test-data", "", "", "", "dicom-compression-test")
    for key, value in worker_env(probe).items():
        monkeypatch.setenv(key, value)
    reset_clients()
    with mock_aws():
        stack = create_resources(client("s3"), client("sqs"), client("events"))
        assert (stack.bucket, stack.bus_name) == (probe.bucket, probe.bus_name)
        sqs = client("sqs")
        # The notification configuration sent an s3:TestEvent: keep it for the test that wants it.
        test_events = list(
            sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                "Messages", []
            )
        )
        assert [json.loads(m["Body"]).get("Event") for m in test_events] == ["s3:TestEvent"]
        sqs.change_message_visibility(
            QueueUrl=stack.queue_url, ReceiptHandle=test_events[0]["ReceiptHandle"], VisibilityTimeout=0
        )
        from handlers import worker

        monkeypatch.setattr(worker.metrics, "namespace", "DicomCompression")  # read at import time
        arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        yield Aws(stack, client("s3"), sqs, worker.handler, arn, [])
    reset_clients()


@pytest.fixture
def small(corpus: Path, tmp_path: Path) -> dict[str, bytes]:
    return study_files(make_small_study(corpus, tmp_path / "small"))


def route_logs_to_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the structured logger (bound to the stdout of import time) at capsys' stdout.

    Call it in the test body: capsys swaps in a fresh stream for the call phase.
    """
    from pipeline.observability import logger

    handlers = [h for h in logger.handlers if hasattr(h, "stream")]
    assert handlers
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", sys.stdout)


def drop_test_event(aws: Aws) -> None:
    msgs = aws.receive()
    assert len(msgs) == 1 and json.loads(msgs[0]["Body"])["Event"] == "s3:TestEvent"
    assert aws.run(msgs) == set()


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


# --------------------------------------------------------------------------- tests


def test_s3_test_event_is_dropped(aws: Aws) -> None:
    msgs = aws.receive()
    assert len(msgs) == 1 and json.loads(msgs[0]["Body"])["Event"] == "s3:TestEvent"
    assert aws.invoke(msgs) == {"batchItemFailures": []}
    aws.settle(msgs, set())
    assert aws.receive() == [] and aws.dlq() == []
    assert aws.new_events("") == [] and aws.events == []
    listing = aws.s3.list_objects_v2(Bucket=aws.stack.bucket).get("Contents", [])
    assert listing == []


def test_fixture_study_end_to_end(
    aws: Aws,
    fixture_study: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    route_logs_to_capsys(monkeypatch)
    drop_test_event(aws)
    prefix = "incoming/clinic-7/2025-08-27/ct-nested-001/"
    files = study_files(fixture_study)
    assert sorted(files) == sorted(FIXTURE_ORDER)
    aws.submit(prefix, files)
    msg = aws.receive_one()
    assert json.loads(msg["Body"])["Records"][0]["s3"]["object"]["key"].endswith("_READY")

    response = aws.invoke([msg])

    assert response == {"batchItemFailures": []}
    zip_key, record_key = (
        "compressed/clinic-7/2025-08-27/ct-nested-001.zip",
        "compressed/clinic-7/2025-08-27/ct-nested-001.result.json",
    )
    zip_bytes = aws.get(zip_key)
    assert zip_bytes is not None
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == FIXTURE_ORDER
    record = aws.record(record_key)
    assert record["status"] == "succeeded"
    assert record["output"]["sha256"] == sha256(zip_bytes) and record["output"]["size"] == len(zip_bytes)
    assert record["totals"]["files"] == 11 and record["totals"]["bytesIn"] == sum(map(len, files.values()))
    assert record["study"]["prefix"] == prefix and record["study"]["marker"] == "_READY"
    assert {i["path"] for i in record["ignored"]} == {"_READY"}

    [event] = aws.new_events(prefix)
    check_event_shape(event, bucket=aws.stack.bucket)
    assert event.detail_type == COMPRESSED
    detail = event.detail
    assert detail["status"] == "succeeded"
    assert detail["study"] == {"bucket": aws.stack.bucket, "prefix": prefix, "marker": "_READY"}
    assert detail["output"] == {"bucket": aws.stack.bucket, "zipKey": zip_key, "recordKey": record_key}
    assert detail["settings"] == {"mode": "lossy", "rate": 100.0, "codec": "j2k", "verify": True, "minPsnrDb": 40.0}
    assert detail["metadata"] is None
    assert detail["inputFingerprint"] == record["inputFingerprint"]
    assert detail["totals"]["files"] == 11 and detail["totals"]["bytesOut"] == len(zip_bytes)
    assert "files" not in detail and "files" not in json.dumps(detail["totals"]).replace('"files":', "")

    # No header value of the study anywhere in what the worker said.
    out, err = capsys.readouterr()
    assert "study compressed" in out  # the logger's output really is captured here
    said = "\n".join([out, err, caplog.text, json.dumps(event.raw, ensure_ascii=False)])
    values = phi_values(fixture_study)
    assert {"REMOVED", "QMNx85rKkkg", "PLASTIC", "Test^S R"} <= values
    leaked = sorted(v for v in values if v in said)
    assert leaked == []
    # ... nor names/IDs in the record (it may hold UIDs of changed instances, never names or IDs)
    record_text = json.dumps(record, ensure_ascii=False)
    assert [v for v in ("QMNx85rKkkg", "PLASTIC", "Test^S R") if v in record_text] == []


def test_poison_message_is_dropped_and_good_one_succeeds(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    aws.sqs.send_message(QueueUrl=aws.stack.queue_url, MessageBody="this is not JSON {")
    prefix = "incoming/poison-batch/s1/"
    aws.submit(prefix, small)
    msgs = aws.receive()
    assert len(msgs) == 2
    response = aws.invoke(msgs)
    assert response == {"batchItemFailures": []}
    aws.settle(msgs, set())
    assert aws.record("compressed/poison-batch/s1.result.json")["status"] == "succeeded"
    with zipfile.ZipFile(io.BytesIO(aws.get("compressed/poison-batch/s1.zip") or b"")) as zf:
        assert zf.namelist() == SMALL_ORDER
    [event] = aws.new_events(prefix)
    assert event.detail_type == COMPRESSED
    assert aws.receive() == [] and aws.dlq() == []


def _submit_incomplete(aws: Aws, prefix: str, small: dict[str, bytes]) -> tuple[str, bytes]:
    missing = "MR10/IM1"
    manifest = manifest_for(small)  # lists every file ...
    present = {p: d for p, d in small.items() if p != missing}  # ... but one never arrives
    aws.submit(prefix, present, marker="manifest.json", marker_body=manifest)
    return missing, manifest


def test_incomplete_manifest_is_retried_then_fails_cleanly(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/incomplete/s1/"
    missing, _ = _submit_incomplete(aws, prefix, small)
    record_key = "compressed/incomplete/s1.result.json"
    for attempt in (1, 2):
        msg = aws.receive_one()
        assert msg["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        assert aws.run([msg]) == {msg["MessageId"]}, "an incomplete study must be retried"
        assert aws.get(record_key) is None
        assert aws.new_events(prefix) == []
    msg = aws.receive_one()
    assert msg["Attributes"]["ApproximateReceiveCount"] == "3"
    response = aws.invoke([msg])  # the last receive: no exception, a clean failure
    assert isinstance(response, dict)
    record = aws.record(record_key)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "IncompleteStudy"
    assert f"{missing} (missing)" in record["error"]["message"]
    assert not any(f"{p} (missing)" in record["error"]["message"] for p in small if p != missing)
    [event] = aws.new_events(prefix)
    check_event_shape(event, bucket=aws.stack.bucket)
    assert event.detail_type == FAILED
    assert event.detail["error"] == record["error"]
    assert event.detail["study"]["marker"] == "manifest.json"
    assert aws.get("compressed/incomplete/s1.zip") is None


def test_retry_in_a_mixed_batch_reports_only_that_record(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/incomplete/mixed/"
    _submit_incomplete(aws, prefix, small)
    aws.sqs.send_message(QueueUrl=aws.stack.queue_url, MessageBody="[]")
    msgs = aws.receive()
    assert len(msgs) == 2
    study_msg = next(m for m in msgs if m["Body"] != "[]")
    assert failures(aws.invoke(msgs)) == [study_msg["MessageId"]]


def test_retry_of_a_single_message_batch_is_a_batch_item_failure(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/incomplete/single/"
    _submit_incomplete(aws, prefix, small)
    msg = aws.receive_one()
    assert aws.invoke([msg]) == {"batchItemFailures": [{"itemIdentifier": msg["MessageId"]}]}


def test_invalid_manifest_fails_at_once(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/invalid/s1/"
    aws.submit(prefix, small, marker="manifest.json", marker_body=b'{"compresionRate": 10, "files": []}')
    msg = aws.receive_one()
    assert msg["Attributes"]["ApproximateReceiveCount"] == "1"
    assert aws.invoke([msg]) == {"batchItemFailures": []}  # not retried: retrying cannot help
    aws.settle([msg], set())
    record = aws.record("compressed/invalid/s1.result.json")
    assert record["status"] == "failed"
    assert record["error"]["code"] == "InvalidManifest"
    assert "compresionRate" in record["error"]["message"]
    [event] = aws.new_events(prefix)
    check_event_shape(event, bucket=aws.stack.bucket)
    assert event.detail_type == FAILED and event.detail["error"]["code"] == "InvalidManifest"
    assert aws.get("compressed/invalid/s1.zip") is None
    assert aws.receive() == [] and aws.dlq() == []


@pytest.mark.parametrize("manifest", [b'{"compressionRate": 1}', b'{"compressionRate": 20000}'])
def test_manifest_with_unusable_rate_fails_at_once(aws: Aws, small: dict[str, bytes], manifest: bytes) -> None:
    drop_test_event(aws)
    prefix = "incoming/invalid/rate/"
    aws.submit(prefix, small, marker="manifest.json", marker_body=manifest)
    msg = aws.receive_one()
    assert aws.run([msg]) == set()
    record = aws.record("compressed/invalid/rate.result.json")
    assert (record["status"], record["error"]["code"]) == ("failed", "InvalidManifest")
    assert "compressionRate" in record["error"]["message"]
    [event] = aws.new_events(prefix)
    assert event.detail_type == FAILED


def test_manifest_metadata_that_cannot_be_stored_fails_cleanly(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/invalid/surrogate/"
    aws.submit(prefix, small, marker="manifest.json", marker_body=b'{"metadata": {"note": "\\udc80"}}')
    msg = aws.receive_one()
    # A lone surrogate parses as JSON but cannot be written as UTF-8: parse_manifest refuses the
    # manifest, so the study fails once for good (recorded, announced, the message deleted).
    assert aws.run([msg]) == set()
    record = aws.record("compressed/invalid/surrogate.result.json")
    assert record["status"] == "failed"
    assert record["error"] == {
        "code": "InvalidManifest",
        "message": "manifest.json is not valid JSON: it contains lone surrogate escapes",
    }
    assert record["metadata"] is None  # nothing of the manifest is kept
    [event] = aws.new_events(prefix)
    check_event_shape(event, bucket=aws.stack.bucket)
    assert event.detail_type == FAILED
    assert event.detail["error"] == record["error"]
    assert event.detail["metadata"] is None
    assert aws.get("compressed/invalid/surrogate.zip") is None
    assert aws.receive() == [] and aws.dlq() == []


def test_duplicate_trigger_for_unchanged_inputs(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/dup/s1/"
    aws.submit(prefix, small, marker="manifest.json", marker_body=manifest_for(small, metadata={"order": "o-1"}))
    assert aws.run([aws.receive_one()]) == set()
    zip_key, record_key = "compressed/dup/s1.zip", "compressed/dup/s1.result.json"
    zip_before, record_before = aws.get(zip_key), aws.get(record_key)
    assert json.loads(record_before or b"{}")["status"] == "succeeded"
    [first] = aws.new_events(prefix)
    assert first.detail["metadata"] == {"order": "o-1"}

    # The marker written again (S3 notifies again), and the very same notification delivered twice.
    manifest = aws.get(prefix + "manifest.json")
    aws.s3.put_object(Bucket=aws.stack.bucket, Key=prefix + "manifest.json", Body=manifest)
    again = aws.receive_one()
    aws.sqs.send_message(QueueUrl=aws.stack.queue_url, MessageBody=again["Body"])
    assert aws.run([again]) == set()
    assert aws.run([aws.receive_one()]) == set()

    assert aws.get(record_key) == record_before
    assert aws.get(zip_key) == zip_before
    assert aws.new_events(prefix) == []
    assert aws.receive() == [] and aws.dlq() == []


def test_changed_inputs_without_and_with_overwrite(aws: Aws, small: dict[str, bytes], corpus: Path) -> None:
    drop_test_event(aws)
    prefix = "incoming/changed/s1/"
    zip_key, record_key = "compressed/changed/s1.zip", "compressed/changed/s1.result.json"
    aws.submit(prefix, small)
    assert aws.run([aws.receive_one()]) == set()
    zip_before, record_before = aws.get(zip_key), aws.get(record_key)
    assert zip_before and json.loads(record_before or b"{}")["status"] == "succeeded"
    [first] = aws.new_events(prefix)
    assert first.detail_type == COMPRESSED

    # A file changes (another real slice) and the study is announced again without overwriteExisting.
    changed = {**small, "MR1/IM2": (corpus / "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR2/6605").read_bytes()}
    assert changed["MR1/IM2"] != small["MR1/IM2"]
    aws.submit(
        prefix,
        {"MR1/IM2": changed["MR1/IM2"]},
        marker="manifest.json",
        marker_body=manifest_for(changed, overwriteExisting=False),
    )
    assert aws.run([aws.receive_one()]) == set()
    [refused] = aws.new_events(prefix)
    check_event_shape(refused, bucket=aws.stack.bucket)
    assert refused.detail_type == FAILED
    assert refused.detail["error"]["code"] == "OutputExists"
    assert "overwriteExisting" in refused.detail["error"]["message"]
    assert aws.get(zip_key) == zip_before
    assert aws.get(record_key) == record_before

    # With overwriteExisting: true the outputs are replaced.
    aws.s3.put_object(
        Bucket=aws.stack.bucket, Key=prefix + "manifest.json", Body=manifest_for(changed, overwriteExisting=True)
    )
    assert aws.run([aws.receive_one()]) == set()
    [replaced] = aws.new_events(prefix)
    assert replaced.detail_type == COMPRESSED
    zip_after, record_after = aws.get(zip_key), aws.record(record_key)
    assert zip_after is not None and zip_after != zip_before
    assert record_after["status"] == "succeeded"
    assert record_after["output"]["sha256"] == sha256(zip_after)
    assert record_after["inputFingerprint"] != json.loads(record_before or b"{}")["inputFingerprint"]
    assert replaced.detail["inputFingerprint"] == record_after["inputFingerprint"]
    with zipfile.ZipFile(io.BytesIO(zip_after)) as zf:
        assert zf.namelist() == SMALL_ORDER


def test_manifest_sha256_mismatch_fails_the_study(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/sha/s1/"
    doc = json.loads(manifest_for(small))
    doc["files"][1]["sha256"] = "0" * 64  # what the client computed is not what arrived
    bad_path = doc["files"][1]["path"]
    aws.submit(prefix, small, marker="manifest.json", marker_body=json.dumps(doc).encode())
    assert aws.run([aws.receive_one()]) == set()
    record = aws.record("compressed/sha/s1.result.json")
    assert record["status"] == "failed"
    assert bad_path in record["error"]["message"] and "sha256" in record["error"]["message"]
    assert aws.get("compressed/sha/s1.zip") is None
    [event] = aws.new_events(prefix)
    assert event.detail_type == FAILED and event.detail["error"] == record["error"]


def test_failure_after_success_does_not_clobber_the_record(aws: Aws, small: dict[str, bytes]) -> None:
    drop_test_event(aws)
    prefix = "incoming/clobber/s1/"
    aws.submit(prefix, small)
    assert aws.run([aws.receive_one()]) == set()
    zip_before, record_before = aws.get("compressed/clobber/s1.zip"), aws.get("compressed/clobber/s1.result.json")
    assert json.loads(record_before or b"{}")["status"] == "succeeded"
    aws.new_events(prefix)

    aws.s3.put_object(Bucket=aws.stack.bucket, Key=prefix + "manifest.json", Body=b'{"mode": "lossles"}')
    assert aws.run([aws.receive_one()]) == set()
    [event] = aws.new_events(prefix)
    assert event.detail_type == FAILED and event.detail["error"]["code"] == "InvalidManifest"
    assert aws.get("compressed/clobber/s1.zip") == zip_before
    assert aws.get("compressed/clobber/s1.result.json") == record_before


def test_a_manifest_asking_for_the_report_gets_it_next_to_the_record(aws: Aws, fixture_study: Path) -> None:
    """``"report": true``: the quality report in S3 beside the record, its key in both the record
    and the event, built from the ZIP read back by ranged GETs."""
    drop_test_event(aws)
    prefix = "incoming/clinic-7/with-report/"
    files = study_files(fixture_study)
    aws.submit(prefix, files, marker="manifest.json", marker_body=manifest_for(files, report=True))
    assert aws.invoke([aws.receive_one()]) == {"batchItemFailures": []}
    record = aws.record("compressed/clinic-7/with-report.result.json")
    assert record["status"] == "succeeded", record["warnings"]
    key = record["output"]["reportKey"]
    assert key == "compressed/clinic-7/with-report.report.html"
    html = aws.get(key)
    assert html is not None and html.startswith(b"<!DOCTYPE html") and b"data:image/png;base64," in html
    assert b"CT1" in html  # a series (folder) of the study is shown
    [event] = aws.new_events(prefix)
    assert event.detail["output"]["reportKey"] == key
