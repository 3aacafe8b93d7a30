"""Duplicates and races: one study triggered five times, two worker processes at once.

S3 and SQS deliver at least once, clients re-upload markers, and several workers poll the
same queue. Whatever the number of triggers, a study must give exactly one ZIP, one final
record and one ``Study Compressed`` event for its input fingerprint, byte-identical to a
single clean run, and leave no lock and no multipart upload behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.aws import client
from pipeline.trigger.events import StudyTrigger, parse_body
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
from tests.helpers.facts import Facts, FactStore
from tests.helpers.guards import wait_for
from tests.helpers.processes import WorkerProcess, messages
from tests.helpers.s3_faults import S3Faults, request_key
from tests.helpers.studies import make_ct_study, manifest_for, sha256, study_files

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

VISIBILITY_TIMEOUT = 10
SLICES = 24  # long enough (~1-2 s of work per run) for two workers to meet on the lock


@pytest.fixture(scope="module")
def files(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return study_files(make_ct_study(corpus, tmp_path_factory.mktemp("dup") / "study", SLICES))


@pytest.fixture(scope="module")
def reference(stack: Any, files: dict[str, bytes], fact_store: FactStore) -> dict[str, Any]:
    """A single clean run of the same study, elsewhere in the bucket (one trigger, one worker)."""
    from handlers.worker import handler

    facts = fact_store.recorder("tests/reliability/test_duplicates.py::reference")
    facts.setup("duplicates.slices", SLICES)
    facts.setup("duplicates.study_bytes", sum(map(len, files.values())), unit="bytes")

    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    prefix = "incoming/reference/study/"
    upload(s3, stack.bucket, prefix, files)
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    run_until_idle(stack.queue_url, handler)
    record = get_record(s3, stack.bucket, "compressed/reference/study.result.json")
    assert record is not None and record["status"] == "succeeded"
    zip_bytes = get_bytes(s3, stack.bucket, "compressed/reference/study.zip")
    assert zip_bytes is not None and sha256(zip_bytes) == record["output"]["sha256"]
    facts.equal("duplicates.reference.objects", record["totals"]["files"], SLICES)
    return {"sha256": sha256(zip_bytes), "files": record["files"]}


def _workers(stack: Any, tmp_path: Path, tag: str) -> list[WorkerProcess]:
    return [WorkerProcess(stack, tmp_path, f"{tag}-{i}", WORKERS="1") for i in (1, 2)]


def _outcomes(workers: list[WorkerProcess]) -> dict[str, int]:
    logs = [line for w in workers for line in w.logs()]
    return {
        "compressed": len(messages(logs, "study compressed")),
        "duplicates": len(messages(logs, "duplicate trigger")),
        "lock_busy": sum(
            "another worker is compressing" in str(line.get("reason", "")) for line in messages(logs, "study not ready")
        ),
        "failed": len(messages(logs, "study failed")),
    }


def _run_workers(workers: list[WorkerProcess], sqs: Any, queue_url: str, until: Any) -> dict[str, int]:
    try:
        for w in workers:  # started together: both long-poll the same queue at once
            w.start()
        wait_for(lambda: until(_outcomes(workers)), "the workers to handle every delivery")
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), "the study queue to drain")
    finally:
        for w in workers:
            w.stop()
        # A receive long-poll (1 s) a stopped worker left pending could still take a new message
        # (and hide it for the visibility timeout): let it expire before the next trigger.
        time.sleep(1.5)
    return _outcomes(workers)


def test_five_triggers_two_workers_one_output(
    stack: Any, files: dict[str, bytes], reference: dict[str, Any], tmp_path: Path, facts: Facts
) -> None:
    s3, sqs = client("s3"), client("sqs")
    events = EventLog(sqs, stack.notification_queue_url)
    prefix = "incoming/dup/study/"
    zip_key, record_key = "compressed/dup/study.zip", "compressed/dup/study.result.json"
    upload(s3, stack.bucket, prefix, files)

    # Triggers 1 and 2: `_READY` and `manifest.json` both, so two messages wait for two workers.
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    s3.put_object(Bucket=stack.bucket, Key=prefix + "manifest.json", Body=manifest_for(files))
    wait_for(lambda: queue_counts(sqs, stack.queue_url)[0] == 2, "both notifications on the queue")
    race = _run_workers(
        _workers(stack, tmp_path, "race"), sqs, stack.queue_url, lambda o: o["compressed"] + o["duplicates"] >= 2
    )
    assert race["compressed"] == 1 and race["duplicates"] == 1 and race["failed"] == 0, race
    record_after_race = s3.head_object(Bucket=stack.bucket, Key=record_key)["ETag"]
    zip_after_race = s3.head_object(Bucket=stack.bucket, Key=zip_key)["ETag"]

    # Trigger 3: `_READY` uploaded again. Trigger 4: that very notification body sent once more.
    # Trigger 5: the first delivery of trigger 3 is received and dropped without deleting it
    # (a worker that died), so it reappears once its visibility is 0 (redelivery).
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    [again] = wait_for(
        lambda: sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages"
        ),
        "the new notification",
    )
    [trigger] = parse_body(again["Body"], bucket=stack.bucket, source_prefix="incoming/")
    assert isinstance(trigger, StudyTrigger) and (trigger.study_prefix, trigger.marker) == (prefix, "_READY")
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=again["Body"])
    sqs.change_message_visibility(QueueUrl=stack.queue_url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=0)
    wait_for(lambda: queue_counts(sqs, stack.queue_url)[0] == 2, "the redelivery and the copy on the queue")
    later = _run_workers(_workers(stack, tmp_path, "later"), sqs, stack.queue_url, lambda o: o["duplicates"] >= 2)
    assert later["compressed"] == 0 and later["duplicates"] == 2 and later["failed"] == 0, later
    # Which worker meets the other's lock depends on timing: printed, not asserted (nor reported).
    print(f"\nlock contention seen in the race: {race['lock_busy']} time(s)")
    facts.setup("duplicates.five.triggers", 5)
    facts.setup("duplicates.five.worker_processes", 4)
    facts.equal("duplicates.five.compressed", race["compressed"] + later["compressed"], 1)
    facts.equal("duplicates.five.duplicate_triggers", race["duplicates"] + later["duplicates"], 3)

    # Exactly one ZIP and one final record, the same bytes as the clean run elsewhere.
    assert list_keys(s3, stack.bucket, "compressed/dup/") == [record_key, zip_key]
    facts.equal("duplicates.five.output_keys", len(list_keys(s3, stack.bucket, "compressed/dup/")), 2)
    zip_bytes = get_bytes(s3, stack.bucket, zip_key)
    record = get_record(s3, stack.bucket, record_key)
    assert zip_bytes is not None and record is not None
    assert record["status"] == "succeeded"
    assert sha256(zip_bytes) == reference["sha256"] == record["output"]["sha256"]
    assert record["files"] == reference["files"]
    facts.equal("duplicates.five.objects", record["totals"]["files"], SLICES)
    # The duplicates wrote nothing: the record and ZIP are the ones the race left.
    assert s3.head_object(Bucket=stack.bucket, Key=record_key)["ETag"] == record_after_race
    assert s3.head_object(Bucket=stack.bucket, Key=zip_key)["ETag"] == zip_after_race
    # One event for the input fingerprint; nothing left open, locked or queued.
    mine = events.for_prefix(prefix)
    assert [(e["detail-type"], e["detail"]["inputFingerprint"]) for e in mine] == [
        ("Study Compressed", record["inputFingerprint"])
    ]
    facts.equal("duplicates.five.events", len(mine), 1)
    assert open_uploads(s3, stack.bucket) == []
    assert get_bytes(s3, stack.bucket, zip_key + ".lock") is None
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []


def test_worker_that_loses_the_race_after_its_duplicate_check_stays_silent(
    stack: Any, files: dict[str, bytes], facts: Facts
) -> None:
    """Deterministic version of the worst interleaving: worker B has checked for a final record
    (none yet) and its lock PUT is throttled (503 SlowDown, retried by botocore); meanwhile
    worker A takes the lock, finishes the study and releases the lock. B's retried PUT then
    gets the lock: B must see A's final record and stay silent, not compress and announce again."""
    from devstack.poller import poll_once
    from handlers.worker import handler
    from pipeline.job.config import ServiceConfig
    from pipeline.job.run import run_trigger

    s3, sqs = client("s3"), client("sqs")
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    prefix = "incoming/dup-race/study/"
    zip_key, record_key, lock_key = (
        "compressed/dup-race/study.zip",
        "compressed/dup-race/study.result.json",
        "compressed/dup-race/study.zip.lock",
    )
    drop_pending(sqs, stack.queue_url)
    upload(s3, stack.bucket, prefix, dict(list(files.items())[: facts.setup("duplicates.race.slices", 4)]))
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    wait_for(lambda: queue_counts(sqs, stack.queue_url)[0] == 2, "both notifications on the queue")
    other = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=1)["Messages"][0]
    [trigger_a] = parse_body(other["Body"], bucket=stack.bucket, source_prefix="incoming/")
    assert isinstance(trigger_a, StudyTrigger)
    state = {"a_done": None}

    def decide(operation: str, request: Any) -> tuple[int, str] | None:
        if request_key(request, stack.bucket) != lock_key or "If-None-Match" not in request.headers:
            return None
        if state["a_done"] is None:  # B's first lock attempt: A runs the whole study right now
            state["a_done"] = {}
            state["a_done"] = run_trigger(trigger_a, ServiceConfig.from_env())
            return 503, "SlowDown"
        return None

    with S3Faults(client("s3"), ["PutObject"], decide) as faults:
        assert poll_once(stack.queue_url, handler, wait_seconds=1) == 1
    sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=other["ReceiptHandle"])

    facts.equal("duplicates.race.faults_injected", faults.injected["PutObject"], 1)
    a_record = state["a_done"]
    assert a_record and a_record["status"] == "succeeded" and not a_record.get("duplicate")
    facts.equal("duplicates.race.objects", a_record["totals"]["files"], 4)
    record = get_record(s3, stack.bucket, record_key)
    assert record == a_record, "B rewrote the final record"
    assert sha256(get_bytes(s3, stack.bucket, zip_key) or b"") == record["output"]["sha256"]
    mine = events.for_prefix(prefix)
    assert [e["detail-type"] for e in mine] == ["Study Compressed"], "B compressed and announced again"
    facts.equal("duplicates.race.events", len(mine), 1)
    assert get_bytes(s3, stack.bucket, lock_key) is None
    assert open_uploads(s3, stack.bucket) == []
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
