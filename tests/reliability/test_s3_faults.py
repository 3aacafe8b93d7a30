"""S3 faults: transient errors are absorbed, a permanent one fails the study once, cleanly.

Faults are injected on the worker's own S3 client (``pipeline.aws.client("s3")``, the one the
handler uses in this process) with botocore ``before-send`` hooks that answer the request with
a real S3 XML error instead of sending it. The worker is the real handler driven by
``poll_once`` on the moto server.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from pipeline.aws import client
from pipeline.outputs.s3 import PART_SIZE
from tests.helpers.aws import (
    drop_pending,
    get_bytes,
    get_record,
    list_keys,
    open_uploads,
    queue_counts,
    run_until_idle,
    upload,
)
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts
from tests.helpers.s3_faults import S3Faults, request_key
from tests.helpers.studies import make_ct_study, sha256, study_files

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

VISIBILITY_TIMEOUT = 10
FAULTY = ["GetObject", "PutObject", "UploadPart", "CompleteMultipartUpload"]
TRANSIENT = [(503, "SlowDown"), (500, "InternalError")]
SLICES, BLOBS, BLOB_MIB = 4, 3, 6


@pytest.fixture(scope="module")
def files(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """4 CT slices + three 6 MiB incompressible blobs first in ZIP order: a multipart ZIP of several parts."""
    root = make_ct_study(corpus, tmp_path_factory.mktemp("faults") / "study", SLICES)
    (root / "A").mkdir()
    rng = random.Random(20250827)
    for i in range(1, BLOBS + 1):
        (root / "A" / f"blob{i}.gz").write_bytes(rng.randbytes(BLOB_MIB * 1024 * 1024))
    return study_files(root)


class Recorder:
    """The real handler, counting its invocations."""

    def __init__(self) -> None:
        from handlers.worker import handler

        self.handler = handler
        self.calls = 0

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls += 1
        return self.handler(event, context)


def _submit(stack: Any, prefix: str, files: dict[str, bytes]) -> None:
    s3 = client("s3")
    upload(s3, stack.bucket, prefix, files)
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")


def test_transient_faults_on_every_third_call_change_nothing(stack: Any, files: dict[str, bytes], facts: Facts) -> None:
    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)

    # The clean run, elsewhere.
    _submit(stack, "incoming/faults/clean/", files)
    run_until_idle(stack.queue_url, Recorder())
    clean = get_record(s3, stack.bucket, "compressed/faults/clean.result.json")
    assert clean is not None and clean["status"] == "succeeded"
    clean_zip = get_bytes(s3, stack.bucket, "compressed/faults/clean.zip")
    assert clean_zip is not None
    facts.setup("s3_faults.slices", SLICES)
    facts.setup("s3_faults.blobs", BLOBS)
    facts.setup("s3_faults.blob_mib", BLOB_MIB, unit="MiB")
    facts.equal("s3_faults.clean.objects", clean["totals"]["files"], len(files))
    facts.bound("s3_faults.zip_parts", math.ceil(clean["output"]["size"] / PART_SIZE), ">=", 3)

    # The same study with 503 SlowDown / 500 InternalError on the 1st, 4th, 7th... call of each
    # of GetObject, PutObject, UploadPart and CompleteMultipartUpload.
    prefix = "incoming/faults/flaky/"
    _submit(stack, prefix, files)
    seen: dict[str, int] = {}

    def every_third(operation: str, request: Any) -> tuple[int, str] | None:
        seen[operation] = seen.get(operation, 0) + 1
        n = seen[operation]
        return TRANSIENT[(n // 3) % 2] if n % 3 == 1 else None

    recorder = Recorder()
    with S3Faults(client("s3"), FAULTY, every_third) as faults:
        run_until_idle(stack.queue_url, recorder)

    for op in FAULTY:
        # Every third call (the 1st, 4th, ...): how many calls there are depends on the heartbeat
        # (a "processing" record every 5 s), so the counts vary; each operation got a fault.
        assert faults.injected[op] == (faults.calls[op] + 2) // 3, (op, dict(faults.calls))
        facts.bound(
            f"s3_faults.transient.injected.{op}", faults.injected[op], ">=", 1, varies=True, of=faults.calls[op]
        )
    print(f"\ninjected {dict(faults.injected)} of {dict(faults.calls)} calls; handler invocations: {recorder.calls}")
    # botocore's retries absorbed every fault: one invocation of the handler, no redelivery.
    facts.equal("s3_faults.transient.invocations", recorder.calls, 1)
    record = get_record(s3, stack.bucket, "compressed/faults/flaky.result.json")
    zip_bytes = get_bytes(s3, stack.bucket, "compressed/faults/flaky.zip")
    assert record is not None and record["status"] == "succeeded", record and record.get("error")
    assert zip_bytes is not None
    assert sha256(zip_bytes) == sha256(clean_zip) == record["output"]["sha256"]
    assert record["files"] == clean["files"]
    facts.equal("s3_faults.transient.objects", record["totals"]["files"], len(files))
    assert [e["detail-type"] for e in events.for_prefix(prefix)] == ["Study Compressed"]
    facts.equal("s3_faults.transient.events", len(events.for_prefix(prefix)), 1)
    assert open_uploads(s3, stack.bucket) == []
    assert list_keys(s3, stack.bucket, "compressed/faults/flaky") == [
        "compressed/faults/flaky.result.json",
        "compressed/faults/flaky.zip",
    ]
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []


def test_permanent_access_denied_fails_once_naming_the_object(
    stack: Any, files: dict[str, bytes], facts: Facts
) -> None:
    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    prefix = "incoming/faults/denied/"
    ct_only = {p: d for p, d in files.items() if p.startswith("CT/")}
    _submit(stack, prefix, ct_only)
    denied = prefix + "CT/IM2"

    def access_denied(operation: str, request: Any) -> tuple[int, str] | None:
        return (403, "AccessDenied") if request_key(request, stack.bucket) == denied else None

    recorder = Recorder()
    with S3Faults(client("s3"), ["GetObject"], access_denied) as faults:
        run_until_idle(stack.queue_url, recorder)

    record = get_record(s3, stack.bucket, "compressed/faults/denied.result.json")
    assert record is not None and record["status"] == "failed"
    facts.equal("s3_faults.denied.error_code", record["error"]["code"], "SourceUnreadable")
    facts.contains("s3_faults.denied.message_names_object", record["error"]["message"], "CT/IM2")
    facts.contains("s3_faults.denied.message_names_error", record["error"]["message"], "AccessDenied")
    [event] = events.for_prefix(prefix)
    assert event["detail-type"] == "Study Compression Failed" and event["detail"]["error"] == record["error"]
    facts.equal("s3_faults.denied.failure_events", len(events.for_prefix(prefix)), 1)
    # No retry storm: one invocation, one GET of the forbidden object, the message deleted.
    facts.equal("s3_faults.denied.invocations", recorder.calls, 1)
    facts.equal("s3_faults.denied.gets_of_the_object", faults.injected["GetObject"], 1)
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []
    assert get_bytes(s3, stack.bucket, "compressed/faults/denied.zip") is None
    assert get_bytes(s3, stack.bucket, "compressed/faults/denied.zip.lock") is None
    assert open_uploads(s3, stack.bucket) == []
