"""A worker SIGKILLed mid-study: nothing partial becomes visible, the next worker finishes the job.

The worker is the real ``python -m devstack poll`` process (WORKERS=2 encoder processes,
LOCK_STALE_SECONDS=3) on a moto server whose study queue has a 5 s visibility timeout. The
study is 140 real 512x512 CT slices (~74 MB) in lossless mode, so its ZIP (~15 MB) is a
multipart upload of several parts and the run takes several seconds. It is killed

(a) while encoding: as soon as both encoder processes have spent ``KILL_AFTER_ENCODER_CPU_S``
    (0.3 CPU s) each (the record's progress is only refreshed every few seconds, too coarse to
    catch this moment);
(b) while uploading: as soon as a multipart upload exists for the ZIP key.

Meanwhile a thread keeps calling ``head_object`` on the ZIP key: the key must never exist
except as the final, complete object. A new worker then gets the message back (after the
visibility timeout; it is started once the killed worker's lock is stale, as on AWS where the
visibility timeout is far longer than the lock's staleness), finishes the study, and the ZIP
equals a clean run's. The killed worker's encoder processes must not outlive it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from bench.measure import cpu_seconds
from pipeline.aws import client
from pipeline.config import CompressionSettings
from pipeline.outputs.s3 import PART_SIZE
from tests.helpers.aws import (
    HeadWatcher,
    drop_pending,
    get_bytes,
    get_record,
    open_uploads,
    queue_counts,
    upload,
)
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts, FactStore
from tests.helpers.guards import wait_for
from tests.helpers.processes import WorkerProcess, alive, messages
from tests.helpers.studies import local_reference, make_ct_study, manifest_for, sha256, study_files

VISIBILITY_TIMEOUT = 5
LOCK_STALE_SECONDS = 3
SLICES = 140  # ~74 MB in, ~15 MB ZIP out: a multipart upload of several parts, several seconds of work
WORKERS = 2
KILL_AFTER_ENCODER_CPU_S = 0.3
ORPHAN_GRACE_S = 20  # an encoder busy on one slice needs well under a second to notice


@pytest.fixture(scope="module")
def study(corpus: Path, tmp_path_factory: pytest.TempPathFactory, fact_store: FactStore) -> dict[str, Any]:
    root = make_ct_study(corpus, tmp_path_factory.mktemp("kill") / "study", SLICES)
    zip_bytes, files = local_reference(root, CompressionSettings(mode="lossless"))
    facts = fact_store.recorder("tests/reliability/test_kill.py::study")
    facts.setup("kill.slices", SLICES)
    facts.setup("kill.study_bytes", sum(p.stat().st_size for p in root.rglob("*") if p.is_file()), unit="bytes")
    facts.setup("kill.lock_stale_seconds", LOCK_STALE_SECONDS, unit="s")
    facts.setup("kill.visibility_timeout", VISIBILITY_TIMEOUT, unit="s")
    facts.setup("kill.encoders", WORKERS)
    facts.setup("kill.encoder_cpu_at_kill", KILL_AFTER_ENCODER_CPU_S, unit="CPU s")
    facts.bound("kill.zip_parts", math.ceil(len(zip_bytes) / PART_SIZE), ">=", 2)  # a multipart upload
    return {"files": study_files(root), "zip": zip_bytes, "record_files": files}


def _record(prefix_path: str) -> tuple[str, str, str]:
    return (
        f"compressed/{prefix_path}.zip",
        f"compressed/{prefix_path}.result.json",
        f"compressed/{prefix_path}.zip.lock",
    )


def _lock_is_stale(s3: Any, bucket: str, lock_key: str) -> bool:
    """The killed worker's lock can be taken over (or is gone)."""
    body = get_bytes(s3, bucket, lock_key)
    if body is None:
        return True
    return time.time() - float(json.loads(body).get("since", 0)) > LOCK_STALE_SECONDS + 0.5


def _run_kill(stack: Any, study: dict[str, Any], tmp_path: Path, study_path: str, kill_when: str) -> dict[str, Any]:
    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    prefix = f"incoming/{study_path}/"
    zip_key, record_key, lock_key = _record(study_path)
    upload(s3, stack.bucket, prefix, study["files"])
    s3.put_object(Bucket=stack.bucket, Key=prefix + "manifest.json", Body=manifest_for(study["files"], mode="lossless"))
    env = {"LOCK_STALE_SECONDS": str(LOCK_STALE_SECONDS), "WORKERS": str(WORKERS)}
    first = WorkerProcess(stack, tmp_path, "killed", **env)
    second = WorkerProcess(stack, tmp_path, "successor", **env)
    run: dict[str, Any] = {}
    with HeadWatcher(stack.endpoint, stack.bucket, zip_key) as watch:
        try:
            first.start()

            def kill_point() -> Any:
                record = get_record(s3, stack.bucket, record_key)
                assert record is None or record["status"] == "processing", (
                    f"the study finished before the kill point ({kill_when}): make it bigger"
                )
                if record is None:
                    return None
                if kill_when == "encoding":
                    # The record's progress is written only every few seconds, so "encoding" is
                    # read from the encoders themselves: all of them alive and each past its first slices.
                    encoders = first.children()
                    return (
                        len(encoders) == WORKERS
                        and all(cpu_seconds(p) >= KILL_AFTER_ENCODER_CPU_S for p in encoders)
                        and record
                    )
                uploads = [u for u in open_uploads(s3, stack.bucket, zip_key) if u["Key"] == zip_key]
                return uploads and record

            at_kill = wait_for(kill_point, f"the worker to be {kill_when}", interval=0.02)
            encoders = first.children()
            assert encoders, "the worker should have forked its encoder processes"
            first.kill()
            run["progress_at_kill"] = at_kill["progress"]
            run["uploads_after_kill"] = [u for u in open_uploads(s3, stack.bucket, zip_key) if u["Key"] == zip_key]
            run["zip_after_kill"] = get_bytes(s3, stack.bucket, zip_key)
            run["encoders"] = encoders
            # The killed worker's encoder processes must exit on their own.
            try:
                wait_for(
                    lambda: not any(alive(p) for p in encoders),
                    "the killed worker's encoders to exit",
                    timeout=ORPHAN_GRACE_S,
                    interval=0.1,
                )
            except AssertionError:
                run["orphans"] = [p for p in encoders if alive(p)]
            else:
                run["orphans"] = []

            wait_for(lambda: _lock_is_stale(s3, stack.bucket, lock_key), "the killed worker's lock to go stale")
            second.start()
            final = wait_for(
                lambda: (r := get_record(s3, stack.bucket, record_key)) and r["status"] != "processing" and r,
                "the successor to finish the study",
            )
            wait_for(lambda: queue_counts(sqs, stack.queue_url) == (0, 0), "the study queue to drain")
        finally:
            first.stop()
            second.stop()
    run.update(
        final=final,
        seen=watch.seen,
        polls=watch.polls,
        events=events.for_prefix(prefix),
        successor_logs=second.logs(),
        zip=get_bytes(s3, stack.bucket, zip_key),
        uploads_end=open_uploads(s3, stack.bucket, "compressed/"),
        lock_end=get_bytes(s3, stack.bucket, lock_key),
        dlq=sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []),
    )
    return run


def _check_recovered(run: dict[str, Any], study: dict[str, Any], facts: Facts, case: str) -> None:
    final = run["final"]
    # Killed before completion: no object at the key; the encoders it had forked did not outlive it.
    facts.equal(f"kill.{case}.objects_at_zip_key_after_kill", int(run["zip_after_kill"] is not None), 0)
    facts.equal(f"kill.{case}.encoders_at_kill", len(run["encoders"]), WORKERS)
    facts.equal(f"kill.{case}.encoders_left_running", len(run["orphans"]), 0)
    # Nothing lost: the successor completed the study, and its ZIP is exactly a clean run's.
    assert final["status"] == "succeeded", final.get("error")
    assert run["zip"] is not None
    assert sha256(run["zip"]) == sha256(study["zip"]) == final["output"]["sha256"]
    assert final["files"] == study["record_files"]
    facts.equal(f"kill.{case}.objects", final["totals"]["files"], SLICES)
    facts.equal(f"kill.{case}.compressed", final["totals"]["compressed"], SLICES)
    # Never a partial ZIP at the key: every time it existed, it was the final object.
    facts.bound(f"kill.{case}.head_polls", run["polls"], ">", 0, varies=True)
    facts.equal(f"kill.{case}.head_hits_not_final", sum(size != final["output"]["size"] for size, _ in run["seen"]), 0)
    facts.bound(f"kill.{case}.etags_seen", len({etag for _, etag in run["seen"]}), "<=", 1, varies=True)
    # Nothing leaked: no open upload, no lock, one event, no message left anywhere.
    assert run["uploads_end"] == []
    assert run["lock_end"] is None
    assert [e["detail-type"] for e in run["events"]] == ["Study Compressed"]
    facts.equal(f"kill.{case}.events", len(run["events"]), 1)
    assert run["events"][0]["detail"]["inputFingerprint"] == final["inputFingerprint"]
    assert run["dlq"] == []
    [compressing] = messages(run["successor_logs"], "compressing study")
    assert compressing["files"] == SLICES


def test_worker_killed_while_encoding(stack: Any, study: dict[str, Any], tmp_path: Path, facts: Facts) -> None:
    run = _run_kill(stack, study, tmp_path, "kill/while-encoding", "encoding")
    facts.bound("kill.encoding.files_done_at_kill", run["progress_at_kill"]["filesDone"], "<", SLICES, varies=True)
    _check_recovered(run, study, facts, "encoding")


def test_worker_killed_while_uploading(stack: Any, study: dict[str, Any], tmp_path: Path, facts: Facts) -> None:
    run = _run_kill(stack, study, tmp_path, "kill/while-uploading", "uploading")
    # The killed worker leaves its multipart upload open, and that upload is invisible at the key.
    facts.equal("kill.uploading.uploads_open_after_kill", len(run["uploads_after_kill"]), 1)
    _check_recovered(run, study, facts, "uploading")
    # The successor aborted the killed attempt's upload before starting its own.
    [aborted] = messages(run["successor_logs"], "aborted multipart uploads of an earlier attempt")
    facts.equal("kill.uploading.uploads_aborted_by_successor", aborted["count"], 1)
