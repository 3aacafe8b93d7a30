"""The Lambda service's part, played locally: long-poll the queue, invoke the handler with a
Lambda-shaped SQS batch, delete what succeeded, leave failures to the queue's redrive."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from devstack.resources import REGION
from pipeline.aws import client


class LambdaContext:
    """The attributes powertools and the handler read from a real Lambda context."""

    def __init__(self, timeout_s: int = 900, memory_mb: int = 3008) -> None:
        self.function_name = "dicom-compression-local-worker"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:000000000000:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Messages from ReceiveMessage, reshaped the way Lambda's SQS event source delivers them."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def poll_once(
    queue_url: str,
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    *,
    wait_seconds: int = 1,
    retry_delay: int = 2,
    timeout_s: int = 900,
) -> int:
    """Receive one batch (size 1, as deployed) and run it; returns the number of messages seen."""
    sqs = client("sqs")
    resp = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=wait_seconds, AttributeNames=["All"]
    )
    messages = resp.get("Messages", [])
    if not messages:
        return 0
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    try:
        result = handler(sqs_event(messages, arn), LambdaContext(timeout_s))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
    except Exception:  # the whole invocation failed: every message comes back
        failed = {m["MessageId"] for m in messages}
    for m in messages:
        if m["MessageId"] in failed:
            # Back on the queue soon; after maxReceiveCount receives SQS moves it to the DLQ.
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=retry_delay
            )
        else:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return len(messages)


class Poller:
    """Polls until stopped; runs in a thread (the demo, tests) or in the foreground (``local``)."""

    def __init__(self, queue_url: str, *, retry_delay: int = 2) -> None:
        self.queue_url = queue_url
        self.retry_delay = retry_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        from handlers.worker import handler

        while not self._stop.is_set():
            poll_once(self.queue_url, handler, retry_delay=self.retry_delay)

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self.run, name="sqs-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
