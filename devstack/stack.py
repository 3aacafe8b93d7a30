"""Start a moto server and create the resources ``serverless.yml`` declares, with local names.

No Docker, no credentials: boto3 reaches the server through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import IO, Any

from devstack.resources import REGION, REPO, STAGE, LocalStack
from devstack.template import create_resources_from_template, packaged_template


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int, log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """A real moto server process on 127.0.0.1:port (see moto_server.py), ready when this returns;
    its output goes to ``log`` (discarded by default)."""
    out: IO[bytes] | int = subprocess.DEVNULL if log is None else log
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=REPO,  # wherever the caller runs from, ``-m devstack...`` finds this checkout
        stdout=out,
        stderr=out,
    )
    url = f"http://127.0.0.1:{port}/moto-api/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode} (is port {port} in use?)")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start within 30 s")


def _clients(endpoint: str) -> tuple[Any, Any, Any]:
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return (session.client(s, endpoint_url=endpoint) for s in ("s3", "sqs", "events"))  # type: ignore[return-value]


def create_resources(endpoint: str, *, visibility_timeout: int = 30, max_receives: int = 3) -> LocalStack:
    """The stack's resources on the moto server at ``endpoint`` (see :func:`provision`)."""
    s3, sqs, events = _clients(endpoint)
    stack = provision(
        s3,
        sqs,
        events,
        prefix=f"dicom-compression-{STAGE}",
        visibility_timeout=visibility_timeout,
        max_receives=max_receives,
    )
    return dataclasses.replace(stack, endpoint=endpoint)


def provision(
    s3: Any, sqs: Any, events: Any, *, prefix: str, visibility_timeout: int = 30, max_receives: int = 3
) -> LocalStack:
    """Bucket + suffix-filtered notification -> study queue (DLQ after ``max_receives``), bus + rule -> queue,
    through the given clients (a moto server's, or in-process ``mock_aws``'s); names start with ``prefix``."""
    bucket = f"{prefix}-data"
    s3.create_bucket(Bucket=bucket)
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-studies-dlq", Attributes={"MessageRetentionPeriod": "1209600"})[
        "QueueUrl"
    ]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-studies",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": f"study-marker-{suffix}",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {
                            "FilterRules": [
                                {"Name": "prefix", "Value": "incoming/"},
                                {"Name": "suffix", "Value": suffix},
                            ]
                        }
                    },
                }
                for suffix in ("_READY", "manifest.json")
            ]
        },
    )
    bus = prefix
    events.create_event_bus(Name=bus)
    note_url = sqs.create_queue(QueueName=f"{prefix}-notifications")["QueueUrl"]
    note_arn = sqs.get_queue_attributes(QueueUrl=note_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="study-outcomes",
        EventBusName=bus,
        EventPattern=json.dumps(
            {"source": ["dicom.compression"], "detail-type": ["Study Compressed", "Study Compression Failed"]}
        ),
    )
    events.put_targets(Rule="study-outcomes", EventBusName=bus, Targets=[{"Id": "notifications", "Arn": note_arn}])
    # Configuring the notification made S3 send an s3:TestEvent; the worker drops it like any other.
    return LocalStack("", bucket, queue_url, dlq_url, note_url, bus)


class RunningStack:
    """Context manager: moto server + resources + the environment pointed at them."""

    def __init__(self, port: int | None = None, *, visibility_timeout: int = 30, template: Any = "auto") -> None:
        self.port = port or free_port()
        self.visibility_timeout = visibility_timeout
        self.template = template  # "auto": the packaged template if there is one; a path; None: create_resources
        self.template_used: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}

    def __enter__(self) -> LocalStack:
        self.proc = start_moto(self.port)
        try:
            stack = self._create_resources(f"http://127.0.0.1:{self.port}")
        except BaseException:
            self.proc.kill()
            raise
        for key, value in stack.env().items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        from pipeline.aws import reset_clients

        reset_clients()
        return stack

    # One source of truth with serverless.yml: the resources come from the packaged
    # CloudFormation template when there is one (devstack/template.py).
    def _create_resources(self, endpoint: str) -> LocalStack:

        template = packaged_template() if self.template == "auto" else self.template
        self.template_used = template
        if template is None:
            return create_resources(endpoint, visibility_timeout=self.visibility_timeout)
        return create_resources_from_template(endpoint, template, visibility_timeout=self.visibility_timeout)

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from pipeline.aws import reset_clients

        reset_clients()
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
