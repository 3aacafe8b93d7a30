"""End to end on a real moto server, as a client uses the system.

One ``RunningStack`` for the module (bucket + marker notifications -> study queue with DLQ,
bus + rule -> notification queue). The real handler is driven by the real ``poll_once`` in the
test thread, so every step is deterministic; each test has its own study prefix.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from devstack.poller import poll_once
from devstack.stack import LocalStack, RunningStack
from devstack.submit import submit_study
from pipeline.aws import client
from tests.helpers.events import COMPRESSED, FAILED, Event, check_event_shape, read_events
from tests.helpers.studies import (
    FIXTURE_ORDER,
    SMALL_ORDER,
    make_small_study,
    natural_order,
    phi_values,
    sha256,
    study_files,
    zip_entries,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

RETRY_DELAY = 1  # seconds a failed message stays invisible before SQS offers it again
VISIBILITY_TIMEOUT = 10
SAFETY_TIMEOUT = 90  # only a guard against hanging: tests wait on conditions, never on time


@dataclass
class Call:
    """One handler invocation as the worker loop made it."""

    bodies: list[str]
    receive_counts: list[int]
    result: dict[str, Any] | None
    error: BaseException | None


@dataclass
class Harness:
    stack: LocalStack
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    calls: list[Call] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def s3(self) -> Any:
        return client("s3")

    @property
    def sqs(self) -> Any:
        return client("sqs")

    # ------------------------------------------------------------------ worker
    def _recording_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        bodies = [r["body"] for r in event["Records"]]
        counts = [int(r["attributes"].get("ApproximateReceiveCount", 0)) for r in event["Records"]]
        try:
            result = self.handler(event, context)
        except Exception as exc:
            self.calls.append(Call(bodies, counts, None, exc))
            raise
        self.calls.append(Call(bodies, counts, result, None))
        return result

    def poll(self) -> int:
        return poll_once(self.stack.queue_url, self._recording_handler, wait_seconds=1, retry_delay=RETRY_DELAY)

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def run_until_idle(self) -> None:
        """Work the study queue until nothing is visible or waiting for a retry."""
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while self.queue_counts() != (0, 0):
            assert time.monotonic() < deadline, f"study queue not idle: {self.queue_counts()}"
            self.poll()

    def calls_for(self, prefix: str) -> list[Call]:
        return [c for c in self.calls if any(_marker_prefix(b) == prefix for b in c.bodies)]

    # ------------------------------------------------------------------ outputs
    def get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.stack.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def record(self, key: str) -> dict[str, Any]:
        data = self.get(key)
        assert data is not None, f"no record at {key}"
        return json.loads(data)

    def events_for(self, prefix: str) -> list[Event]:
        """Every event on the notification queue so far for study ``prefix`` (kept for later calls)."""
        self.events.extend(read_events(self.sqs, self.stack.notification_queue_url))
        return [e for e in self.events if e.prefix == prefix]

    def dlq_bodies(self) -> list[str]:
        """Bodies on the DLQ (received and made visible again at once, so they stay there)."""
        msgs = self.sqs.receive_message(QueueUrl=self.stack.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
            "Messages", []
        )
        return [m["Body"] for m in msgs]

    def status(self, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
        from devstack.cli import main

        capsys.readouterr()
        code = main(["status", url])
        return code, json.loads(capsys.readouterr().out)


def _marker_prefix(body: str) -> str | None:
    try:
        key = json.loads(body)["Records"][0]["s3"]["object"]["key"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return unquote_plus(key).rsplit("/", 1)[0] + "/"


@pytest.fixture(scope="module")
def harness() -> Any:
    with RunningStack(visibility_timeout=VISIBILITY_TIMEOUT) as stack:
        from handlers import worker

        saved = worker.metrics.namespace
        worker.metrics.namespace = stack.env()["POWERTOOLS_METRICS_NAMESPACE"]  # read at import time
        try:
            yield Harness(stack, worker.handler)
        finally:
            worker.metrics.namespace = saved


def outputs_for(study_path: str) -> tuple[str, str]:
    return f"compressed/{study_path}.zip", f"compressed/{study_path}.result.json"


# --------------------------------------------------------------------------- tests


def test_s3_test_event_is_consumed_and_dropped(harness: Harness) -> None:
    # (Re)applying the notification configuration makes S3 send an s3:TestEvent to the queue.
    s3 = harness.s3
    config = s3.get_bucket_notification_configuration(Bucket=harness.stack.bucket)
    config.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=harness.stack.bucket, NotificationConfiguration=config)
    before = len(harness.calls)
    outputs_before = _keys(harness, "compressed/")

    harness.run_until_idle()

    test_calls = [c for c in harness.calls[before:] if any('"s3:TestEvent"' in b for b in c.bodies)]
    assert test_calls, "no s3:TestEvent reached the worker"
    for call in test_calls:
        assert call.error is None and call.result == {"batchItemFailures": []}
    assert harness.queue_counts() == (0, 0)
    assert not any("s3:TestEvent" in b for b in harness.dlq_bodies())
    assert _keys(harness, "compressed/") == outputs_before  # nothing written for it


def _keys(harness: Harness, prefix: str) -> list[str]:
    return sorted(
        o["Key"] for o in harness.s3.list_objects_v2(Bucket=harness.stack.bucket, Prefix=prefix).get("Contents", [])
    )


def test_submit_with_manifest_to_spaced_non_ascii_prefix(
    harness: Harness, fixture_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study_path = "Clinic Zürich/étude 1"
    prefix = f"incoming/{study_path}/"
    url = f"s3://{harness.stack.bucket}/{prefix}"
    submitted = submit_study(fixture_study, url, options={"metadata": {"clinic": "Zürich", "order": "o-1"}})
    assert submitted["marker"] == "manifest.json" and submitted["files"] == 11

    code, status = harness.status(url, capsys)
    assert (code, status["state"]) == (0, "queued")

    harness.run_until_idle()

    zip_key, record_key = outputs_for(study_path)
    zip_bytes = harness.get(zip_key)
    assert zip_bytes is not None
    submitted_paths = [f["path"] for f in submitted["manifest"]["files"]]
    assert zip_entries(zip_bytes) == natural_order(submitted_paths) == FIXTURE_ORDER
    record = harness.record(record_key)
    assert record["status"] == "succeeded"
    assert record["output"]["sha256"] == sha256(zip_bytes)
    assert record["study"]["prefix"] == prefix and record["study"]["marker"] == "manifest.json"
    assert record["metadata"] == {"clinic": "Zürich", "order": "o-1"}
    assert {i["path"] for i in record["ignored"]} == {"manifest.json"}

    code, status = harness.status(url, capsys)
    assert code == 0
    assert status["state"] == "succeeded"
    assert status["zip"] == f"s3://{harness.stack.bucket}/{zip_key}"
    assert status["totals"]["files"] == 11

    [event] = harness.events_for(prefix)
    check_event_shape(event, bucket=harness.stack.bucket)
    assert event.detail_type == COMPRESSED
    assert event.detail["study"] == {"bucket": harness.stack.bucket, "prefix": prefix, "marker": "manifest.json"}
    assert event.detail["output"] == {"bucket": harness.stack.bucket, "zipKey": zip_key, "recordKey": record_key}
    assert event.detail["metadata"] == {"clinic": "Zürich", "order": "o-1"}
    assert event.detail["totals"]["files"] == 11
    assert event.raw["detail-type"] == "Study Compressed" and event.raw["source"] == "dicom.compression"
    text = json.dumps(event.raw, ensure_ascii=False)
    assert [v for v in phi_values(fixture_study) if v in text] == []


def test_plain_put_object_then_ready(
    harness: Harness, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = make_small_study(corpus, tmp_path / "s")
    files = study_files(local)
    study_path = "Clinic Zürich/2025-08-27/étude 2 + suite"
    prefix = f"incoming/{study_path}/"
    s3 = harness.s3
    for rel, data in files.items():
        s3.put_object(Bucket=harness.stack.bucket, Key=prefix + rel, Body=data)
    code, status = harness.status(f"s3://{harness.stack.bucket}/{prefix}", capsys)
    assert status["state"] == "waiting"
    s3.put_object(Bucket=harness.stack.bucket, Key=prefix + "_READY", Body=b"")

    harness.run_until_idle()

    zip_key, record_key = outputs_for(study_path)
    zip_bytes = harness.get(zip_key)
    assert zip_bytes is not None
    assert zip_entries(zip_bytes) == natural_order(files) == SMALL_ORDER
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        assert all(zf.read(name)[128:132] == b"DICM" for name in SMALL_ORDER)
    record = harness.record(record_key)
    assert record["status"] == "succeeded" and record["study"]["marker"] == "_READY"
    assert record["totals"]["files"] == len(files)
    code, status = harness.status(f"s3://{harness.stack.bucket}/{prefix}", capsys)
    assert (code, status["state"]) == (0, "succeeded")
    [event] = harness.events_for(prefix)
    check_event_shape(event, bucket=harness.stack.bucket)
    assert event.detail_type == COMPRESSED and event.detail["study"]["marker"] == "_READY"


def test_duplicate_notifications_give_one_zip_and_one_event(harness: Harness, corpus: Path, tmp_path: Path) -> None:
    local = make_small_study(corpus, tmp_path / "s", ["MR1/IM1", "MR1/IM2", "MR1/IM10"])
    study_path = "dup/Étude 3"
    prefix = f"incoming/{study_path}/"
    submit_study(local, f"s3://{harness.stack.bucket}/{prefix}", marker="ready")
    harness.run_until_idle()
    zip_key, record_key = outputs_for(study_path)
    zip_before, record_before = harness.get(zip_key), harness.get(record_key)
    assert zip_before is not None and json.loads(record_before or b"{}")["status"] == "succeeded"
    [first_call] = harness.calls_for(prefix)
    [body] = first_call.bodies

    # The client writes _READY again; and S3 delivers the original notification twice more.
    harness.s3.put_object(Bucket=harness.stack.bucket, Key=prefix + "_READY", Body=b"")
    harness.sqs.send_message(QueueUrl=harness.stack.queue_url, MessageBody=body)
    harness.sqs.send_message(QueueUrl=harness.stack.queue_url, MessageBody=body)
    harness.run_until_idle()

    calls = harness.calls_for(prefix)
    assert len(calls) == 4
    assert all(c.error is None and c.result == {"batchItemFailures": []} for c in calls)
    zip_after = harness.get(zip_key)
    assert zip_after is not None and sha256(zip_after) == sha256(zip_before)
    assert harness.get(record_key) == record_before
    events = harness.events_for(prefix)
    assert [e.detail_type for e in events] == [COMPRESSED]
    listed = harness.s3.list_objects_v2(Bucket=harness.stack.bucket, Prefix="compressed/dup/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted([zip_key, record_key])


@dataclass
class IncompleteRun:
    prefix: str
    missing: str
    record_key: str
    zip_key: str
    calls: list[Call]
    events: list[Event]
    dlq: list[str]
    status: tuple[int, dict[str, Any]]


@pytest.fixture(scope="module")
def incomplete(harness: Harness, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> IncompleteRun:
    """A manifest lists a file that never arrives; the worker runs until the queue is idle."""
    local = make_small_study(corpus, tmp_path_factory.mktemp("incomplete"))
    files = study_files(local)
    study_path = "Clinic Zürich/incomplete étude"
    prefix = f"incoming/{study_path}/"
    missing = "MR9/IM1"
    manifest = {
        "metadata": {"order": "o-9"},
        "files": [{"path": p, "size": len(d), "sha256": sha256(d)} for p, d in files.items()],
    }
    for rel, data in files.items():
        if rel != missing:
            harness.s3.put_object(Bucket=harness.stack.bucket, Key=prefix + rel, Body=data)
    harness.s3.put_object(Bucket=harness.stack.bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest).encode())

    harness.run_until_idle()

    zip_key, record_key = outputs_for(study_path)
    capsys_free_status = _status_without_capsys(f"s3://{harness.stack.bucket}/{prefix}")
    return IncompleteRun(
        prefix,
        missing,
        record_key,
        zip_key,
        harness.calls_for(prefix),
        harness.events_for(prefix),
        harness.dlq_bodies(),
        capsys_free_status,
    )


def _status_without_capsys(url: str) -> tuple[int, dict[str, Any]]:
    import contextlib

    from devstack.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["status", url])
    return code, json.loads(out.getvalue())


def test_incomplete_manifest_is_retried_then_fails_with_missing_files(
    incomplete: IncompleteRun, harness: Harness
) -> None:
    # Three receives: two retries (the study may still be uploading), then a clean failure.
    assert [c.receive_counts for c in incomplete.calls] == [[1], [2], [3]]
    assert all(c.error is not None or c.result["batchItemFailures"] for c in incomplete.calls[:2])
    record = harness.record(incomplete.record_key)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "IncompleteStudy"
    assert f"{incomplete.missing} (missing)" in record["error"]["message"]
    assert record["metadata"] == {"order": "o-9"}
    assert harness.get(incomplete.zip_key) is None
    assert incomplete.status[0] == 1
    assert incomplete.status[1]["state"] == "failed"
    assert incomplete.status[1]["error"]["code"] == "IncompleteStudy"

    assert [e.detail_type for e in incomplete.events] == [FAILED]
    [event] = incomplete.events
    check_event_shape(event, bucket=harness.stack.bucket)
    assert event.detail["error"]["code"] == "IncompleteStudy"
    assert incomplete.missing in event.detail["error"]["message"]
    assert event.detail["metadata"] == {"order": "o-9"}
    assert event.detail["study"]["marker"] == "manifest.json"


def test_incomplete_manifest_message_lands_in_dlq(incomplete: IncompleteRun) -> None:
    assert [b for b in incomplete.dlq if _marker_prefix(b) == incomplete.prefix], incomplete.dlq


def test_events_on_the_notification_queue_have_the_documented_shape(
    harness: Harness, incomplete: IncompleteRun, corpus: Path, tmp_path: Path
) -> None:
    # At least one success (made here) and one failure (the incomplete study) are on the queue.
    local = make_small_study(corpus, tmp_path / "s", ["MR1/IM1"])
    submit_study(local, f"s3://{harness.stack.bucket}/incoming/shape/one file/")
    harness.run_until_idle()
    harness.events_for("")  # drain what is left
    kinds = {e.detail_type for e in harness.events}
    assert kinds == {COMPRESSED, FAILED}, kinds
    for event in harness.events:
        check_event_shape(event, bucket=harness.stack.bucket)
        assert event.raw["source"] == "dicom.compression"
        assert event.raw["detail-type"] in ("Study Compressed", "Study Compression Failed")
        # (moto's SQS target omits the envelope's "account")
        assert set(event.raw) >= {"version", "id", "detail-type", "source", "time", "region", "resources", "detail"}
    # One outcome per study prefix, whatever the duplicates.
    prefixes = [e.prefix for e in harness.events]
    assert len(prefixes) == len(set(prefixes))


def test_success_event_has_every_documented_detail_key(harness: Harness, corpus: Path, tmp_path: Path) -> None:
    local = make_small_study(corpus, tmp_path / "s", ["MR1/IM2"])
    prefix = "incoming/shape/documented keys/"
    submit_study(local, f"s3://{harness.stack.bucket}/{prefix}")
    harness.run_until_idle()
    [event] = harness.events_for(prefix)
    assert event.detail_type == COMPRESSED
    documented = {
        "status",
        "study",
        "output",
        "settings",
        "inputFingerprint",
        "metadata",
        "totals",
        "verification",
        "warningCount",
        "error",
    }
    assert set(event.detail) == documented
