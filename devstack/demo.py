"""``make demo``: the whole flow on the embedded stack, with the committed fixture study."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

from devstack.poller import Poller
from devstack.resources import REPO
from devstack.stack import RunningStack
from devstack.submit import submit_study
from pipeline.aws import client
from pipeline.outputs.record import summary_lines

FIXTURE = REPO / "fixtures" / "studies" / "ct-nested-001"
STUDY_URL_PATH = "incoming/clinic-7/2025-08-27/ct-nested-001/"


def wait_for_record(bucket: str, key: str, timeout: float = 180, interval: float = 0.5) -> dict[str, Any]:
    from pipeline.outputs.s3 import get_json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = get_json(client("s3"), bucket, key)
        if record and record.get("status") not in (None, "processing"):
            return record
        time.sleep(interval)
    raise TimeoutError(f"no final result record at {key} after {timeout} s")


def receive_events(queue_url: str, expected: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    sqs = client("sqs")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            got.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return got


def run_demo(port: int | None = None) -> int:
    print("== starting the local stack (moto server on 127.0.0.1) ==")
    with RunningStack(port, visibility_timeout=30) as stack:
        print(f"endpoint {stack.endpoint}  bucket {stack.bucket}  bus {stack.bus_name}")
        poller = Poller(stack.queue_url).start()
        try:
            url = f"s3://{stack.bucket}/{STUDY_URL_PATH}"
            print(
                f"== submitting {FIXTURE.relative_to(FIXTURE.parents[2])} to {url} (files first, manifest.json last) =="
            )
            submitted = submit_study(
                FIXTURE, url, options={"compressionRate": 100, "metadata": {"clinic": "clinic-7", "order": "demo-1"}}
            )
            print(f"uploaded {submitted['files']} files, then {submitted['marker']}")
            record_key = f"compressed/{STUDY_URL_PATH.removeprefix('incoming/').rstrip('/')}.result.json"
            record = wait_for_record(stack.bucket, record_key)
            print("== result ==")
            print("\n".join(summary_lines(record)))
            if record["status"] == "failed":
                return 1
            zip_bytes = client("s3").get_object(Bucket=stack.bucket, Key=record["output"]["key"])["Body"].read()
            print(f"== ZIP s3://{stack.bucket}/{record['output']['key']} ==")
            with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
                for info in zf.infolist():
                    print(f"{info.file_size:>10,}  {info.filename}")
            print("== EventBridge event (from the notification queue) ==")
            events = receive_events(stack.notification_queue_url)
            for event in events:
                print(json.dumps({k: event[k] for k in ("source", "detail-type", "detail")}, indent=2))
            ok = record["status"] in ("succeeded", "succeeded_with_warnings") and bool(events)
        finally:
            poller.stop()
    print("== local stack stopped ==")
    return 0 if ok else 1
