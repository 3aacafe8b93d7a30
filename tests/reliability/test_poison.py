"""Poison messages: anything on the study queue that is not a usable trigger is logged and dropped.

Each body is sent to the real study queue on the moto server and handled by the real handler,
alone (through ``poll_once``, as the local worker loop does) and all together in one batch
with a good trigger. A poison message must never fail the batch (it would come back until the
DLQ), and must never stop the good message in the same batch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from devstack.poller import LambdaContext, poll_once, sqs_event
from pipeline.aws import client
from tests.helpers.aws import drop_pending, get_bytes, get_record, queue_counts, s3_notification, upload
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts
from tests.helpers.guards import wait_for
from tests.helpers.studies import make_ct_study, study_files, zip_entries

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

BUCKET = "dicom-compression-local-data"


def _poison() -> dict[str, tuple[str, str]]:
    """name -> (body, the drop reason the worker must log)."""

    def event(bucket: str, key: str) -> str:
        return json.dumps(s3_notification(bucket, key))

    giant_key = "incoming/clinic/" + "s" * 250_000 + "/_READY"
    return {
        "not-json": ("this is not JSON {", "message body is not JSON"),
        "empty-body": ("", "message body is not JSON"),
        "json-not-an-s3-event": (json.dumps({"hello": "world"}), "not an S3 event notification"),
        "json-array": ("[1, 2, 3]", "message body is not a JSON object"),
        "json-nested-100000-deep": ("[" * 100_000 + "]" * 100_000, "message body is not JSON"),
        "another-bucket": (event("someone-elses-bucket", "incoming/clinic/s1/_READY"), "event for another bucket"),
        "key-outside-source-prefix": (event(BUCKET, "compressed/clinic/s1/_READY"), "key outside the source prefix"),
        "250kb-text": ("x" * 250_000, "message body is not JSON"),
        "250kb-s3-event-key-too-long": (event(BUCKET, giant_key), "key longer than S3 allows"),
        "300kb-body": (json.dumps({"Records": [], "pad": "p" * 300_000}), "message body larger than SQS allows"),
    }


POISON = _poison()


@pytest.fixture
def worker_log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The structured logger's output (it writes JSON lines to the stdout of import time)."""
    from pipeline.observability import logger

    buf = io.StringIO()
    for handler in logger.handlers:
        if hasattr(handler, "stream"):
            monkeypatch.setattr(handler, "stream", buf)
    return buf


def _dropped(buf: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "message dropped"]


class Recorder:
    def __init__(self) -> None:
        from handlers.worker import handler

        self.handler = handler
        self.responses: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        response = self.handler(event, context)
        self.responses.append(response)
        return response


@pytest.mark.parametrize("name", list(POISON))
def test_poison_alone_is_logged_and_dropped(stack: Any, worker_log: io.StringIO, name: str, facts: Facts) -> None:
    sqs = client("sqs")
    drop_pending(sqs, stack.queue_url)
    body, reason = POISON[name]
    facts.setup(f"poison.alone.{name}.body_bytes", len(body.encode()), unit="bytes")
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
    recorder = Recorder()
    assert poll_once(stack.queue_url, recorder, wait_seconds=1, retry_delay=1) == 1
    facts.equal(f"poison.alone.{name}.invocations", len(recorder.responses), 1)
    assert recorder.responses == [{"batchItemFailures": []}]
    [dropped] = _dropped(worker_log)
    facts.equal(f"poison.alone.{name}.reason", dropped["reason"][: len(reason)], reason)
    # Deleted for good: not redelivered, not on the DLQ, nothing written.
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []
    assert client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="compressed/").get("KeyCount", 0) == 0


def test_poison_in_a_batch_with_a_good_message(
    stack: Any, corpus: Path, tmp_path: Path, worker_log: io.StringIO, facts: Facts
) -> None:
    from handlers.worker import handler

    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    prefix = "incoming/poison/good/"
    files = study_files(make_ct_study(corpus, tmp_path / "good", 3))
    upload(s3, stack.bucket, prefix, files)
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    facts.setup("poison.bodies", list(POISON))
    poison = list(POISON.items())[: facts.setup("poison.batch.poison_messages", 9)]  # a batch holds up to 10
    for _, (body, _reason) in poison:
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
    batch: list[dict[str, Any]] = []
    wait_for(
        lambda: (
            batch.extend(
                sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                    "Messages", []
                )
            )
            or len(batch) == 10
        ),
        "the ten messages",
    )
    arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    response = handler(sqs_event(batch, arn), LambdaContext(900))

    assert response == {"batchItemFailures": []}
    facts.equal("poison.batch.failures_reported", len(response["batchItemFailures"]), 0)
    reasons = sorted(d["reason"] for d in _dropped(worker_log))
    facts.equal("poison.batch.drops_logged", len(reasons), len(poison))
    for (_, (_, expected)), got in zip(sorted(poison, key=lambda p: p[1][1]), sorted(reasons), strict=True):
        assert got.startswith(expected)
    record = get_record(s3, stack.bucket, "compressed/poison/good.result.json")
    assert record is not None and record["status"] == "succeeded"
    assert zip_entries(get_bytes(s3, stack.bucket, "compressed/poison/good.zip") or b"") == [
        "CT/IM1",
        "CT/IM2",
        "CT/IM3",
    ]
    facts.equal("poison.batch.objects", record["totals"]["files"], 3)
    assert [e["detail-type"] for e in events.for_prefix(prefix)] == ["Study Compressed"]
    for m in batch:
        sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"])
