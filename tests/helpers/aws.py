"""The stack's AWS side for the tests: its resources (for ``mock_aws``), what S3 and SQS hold,
S3 notifications as S3 sends them, and Lambda's part played with the real ``poll_once``.

Nothing here mocks the pipeline: resources are created the way ``devstack.stack`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self
from urllib.parse import quote_plus

from devstack.stack import REGION, LocalStack, provision
from tests.helpers.guards import SAFETY_TIMEOUT

# --------------------------------------------------------------------------- resources


def create_resources(
    s3: Any, sqs: Any, events: Any, *, visibility_timeout: int = 30, max_receives: int = 3
) -> LocalStack:
    """The local stack's resources, through the given clients (for mock_aws)."""
    return provision(
        s3,
        sqs,
        events,
        prefix="dicom-compression-test",
        visibility_timeout=visibility_timeout,
        max_receives=max_receives,
    )


def worker_env(stack: LocalStack) -> dict[str, str]:
    """The worker's environment for ``stack`` (without an endpoint: for mock_aws)."""
    env = stack.env()
    env.pop("AWS_ENDPOINT_URL")
    env["AWS_REGION"] = REGION
    env["AWS_SECURITY_TOKEN"] = "testing"
    env["AWS_SESSION_TOKEN"] = "testing"
    return env


# --------------------------------------------------------------------------- S3


def upload(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    """Put every file under ``prefix`` (eight at a time; the marker is the caller's, afterwards)."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=prefix + item[0], Body=item[1]), files.items()))


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def get_record(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    data = get_bytes(s3, bucket, key)
    return json.loads(data) if data is not None else None


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def open_uploads(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


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
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "study-marker-_READY",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key),
                        "size": size,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


class HeadWatcher:
    """A thread that keeps asking S3 for ``key`` and remembers every (size, ETag) it saw."""

    def __init__(self, endpoint: str, bucket: str, key: str) -> None:
        import threading

        import boto3

        self.s3 = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=endpoint)
        self.bucket, self.key = bucket, key
        self.seen: list[tuple[int, str]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="head-watcher", daemon=True)

    def _run(self) -> None:
        from botocore.exceptions import ClientError

        while not self._stop.is_set():
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=self.key)
                self.seen.append((int(head["ContentLength"]), head["ETag"]))
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                    raise
            self.polls += 1
            time.sleep(0.02)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --------------------------------------------------------------------------- SQS


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now visible on ``queue_url`` (deleted as read)."""
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not msgs:
            return out
        for m in msgs:
            out.append(m)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def drop_pending(sqs: Any, queue_url: str) -> None:
    """Consume what the stack's creation left on the study queue (the s3:TestEvent)."""
    for m in drain(sqs, queue_url):
        assert "s3:TestEvent" in m["Body"], m["Body"][:200]


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def peek(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Visible messages, left on the queue (made visible again at once)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        fresh = [m for m in msgs if m["MessageId"] not in seen]
        if not fresh:
            for m in out:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            return out
        for m in fresh:
            seen.add(m["MessageId"])
            out.append(m)


def run_until_idle(queue_url: str, handler: Callable[..., Any], *, retry_delay: int = 1, **kw: Any) -> int:
    """Play Lambda (``poll_once``) until the study queue has nothing visible or in flight."""
    from devstack.poller import poll_once
    from pipeline.aws import client

    sqs = client("sqs")
    polls = 0
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while queue_counts(sqs, queue_url) != (0, 0):
        assert time.monotonic() < deadline, f"study queue not idle: {queue_counts(sqs, queue_url)}"
        polls += poll_once(queue_url, handler, wait_seconds=1, retry_delay=retry_delay, **kw)
    return polls
