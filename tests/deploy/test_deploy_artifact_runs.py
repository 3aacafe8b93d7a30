"""The artifact is the thing that runs: the packaged handler compresses a real study.

The artifact built for this machine's CPU is unzipped into a clean folder and its handler is
invoked by a bare CPython 3.12 (``-I -S``; sys.path = [artifact, runtime-provided boto3 and
its deps], see tests/helpers/lambda_runtime.py) against the local stack (a real moto server started in
this test process). The study goes in the way a client puts it there (files, then
``_READY``); the SQS message the handler gets is the S3 notification moto really sent,
reshaped as Lambda's SQS event source delivers it. Nothing is imported from the repository
or the venv by the handler process: code, numpy, openjpeg, pydicom, powertools and the
forked encoder processes all come from the zip.

Twice: with tracing disabled (the local stack's environment), and with X-Ray tracing active
as the deployed function has it (provider.tracing.lambda): Lambda's trace header and a
local UDP socket standing in for the X-Ray daemon, which must receive the handler's
segments (powertools Tracer + the X-Ray SDK patching the runtime's botocore).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.helpers.lambda_runtime import host_arch, python312, runtime_provided_dir
from tests.helpers.studies import FIXTURE_ORDER

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

REPO = Path(__file__).resolve().parents[2]
STUDY_FIXTURE = REPO / "fixtures" / "studies" / "ct-nested-001"
STUDY_PATH = "clinic-7/study-001"
MEMORY_MB = 1769  # the function's memorySize (serverless.yml): 1 encoder process
HANDLER_TIMEOUT_S = 300
JPEG2000_LOSSY = "1.2.840.10008.1.2.4.91"  # COMPRESSION_RATE 100 (the default) is lossy
TRACE_ROOT = "1-5759e988-bd862e3fe1be46a994272793"

# Runs in the isolated Python 3.12: everything it imports must come from the artifact (or,
# for boto3 & co., from the runtime stand-in). It counts the processes the worker forks.
DRIVER = r"""
import json, os, sys, time, uuid
task, runtime, event_path, out_path = sys.argv[1:5]
sys.path[:0] = [task, runtime]  # like Lambda: /var/task first, then the runtime's boto3

forks = []
_real_fork = os.fork
def _counting_fork():
    pid = _real_fork()
    if pid:
        forks.append(pid)
    return pid
os.fork = _counting_fork  # multiprocessing's fork context calls os.fork()

import handlers.worker, pipeline, numpy, openjpeg, pydicom, aws_lambda_powertools, boto3

class Context:  # the attributes powertools and the handler read from a Lambda context
    function_name = "dicom-compression-dev-worker"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/" + function_name
    log_stream_name = "local"
    _deadline = time.monotonic() + 900
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

with open(event_path) as fh:
    event = json.load(fh)
started = time.monotonic()
result = handlers.worker.handler(event, Context())
seconds = time.monotonic() - started
files = {m.__name__: m.__file__ for m in (handlers.worker, pipeline, numpy, openjpeg, pydicom,
                                           aws_lambda_powertools, boto3)}
with open(out_path, "w") as fh:
    json.dump({"result": result, "files": files, "forks": len(forks), "seconds": seconds,
               "sys_path": sys.path}, fh)
"""


def _clients(endpoint: str) -> tuple[Any, Any]:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=endpoint), session.client("sqs", endpoint_url=endpoint)


def _receive(sqs: Any, queue_url: str, want: Any, timeout_s: float = 30) -> dict:
    """The first message whose parsed body satisfies ``want``; others are deleted (TestEvent)."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        resp = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        )
        for msg in resp.get("Messages", []):
            body = json.loads(msg["Body"])
            if want(body):
                return msg
            seen.append(body)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
    raise AssertionError(f"no wanted message on {queue_url} within {timeout_s} s; saw {seen}")


def _is_study_notification(body: dict) -> bool:
    # s3:TestEvent (sent when the notification was configured) has no Records.
    return body.get("Event") != "s3:TestEvent" and bool(body.get("Records"))


def _xray_segments(udp: socket.socket) -> list[dict]:
    """Every segment document the X-Ray SDK sent ('{"format": "json", ...}\n{segment}')."""
    docs = []
    udp.settimeout(0.5)
    while True:
        try:
            datagram = udp.recv(65536)
        except (TimeoutError, BlockingIOError):
            return docs
        header, _, body = datagram.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}, header
        docs.append(json.loads(body))


@pytest.fixture
def xray_daemon() -> Any:
    """A UDP socket on 127.0.0.1 standing in for the X-Ray daemon."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        yield udp


@pytest.fixture
def lambda_python() -> str:
    if host_arch() is None:
        pytest.skip("no artifact for this CPU")
    python = python312()
    if python is None:
        pytest.skip("no CPython 3.12 here (the artifact holds cp312 wheels); set DEPLOY_TEST_PYTHON312")
    return python


@pytest.mark.parametrize("tracing", ["disabled", "active"])
def test_packaged_handler_compresses_a_study_from_the_artifact(
    packages, lambda_python: str, xray_daemon, tmp_path: Path, tracing: str
) -> None:
    from devstack.poller import sqs_event
    from devstack.stack import RunningStack

    package = packages[host_arch()]
    task = tmp_path / "task"
    with package.zip() as zf:
        zf.extractall(task)
    runtime = runtime_provided_dir(tmp_path / "runtime")
    study = tmp_path / "study"
    shutil.copytree(STUDY_FIXTURE, study)
    files = sorted(p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file())
    assert sorted(files) == sorted(FIXTURE_ORDER)

    # The local stack from the same package's template (devstack/template.py).
    running = RunningStack(template=package.template_path)
    with running as stack:
        assert running.template_used == package.template_path
        s3, sqs = _clients(stack.endpoint)
        prefix = f"{stack.source_prefix}{STUDY_PATH}/"
        for rel in files:
            s3.put_object(Bucket=stack.bucket, Key=prefix + rel, Body=(study / rel).read_bytes())
        s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")

        msg = _receive(sqs, stack.queue_url, _is_study_notification)
        queue_arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        event = sqs_event([msg], queue_arn)
        (tmp_path / "event.json").write_text(json.dumps(event))

        env = {
            **stack.env(),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
            "LAMBDA_TASK_ROOT": str(task),
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        }
        if tracing == "active":  # what Lambda sets for a function with active tracing
            del env["POWERTOOLS_TRACE_DISABLED"]
            env.update(
                {
                    "AWS_LAMBDA_FUNCTION_NAME": "dicom-compression-dev-worker",
                    "_X_AMZN_TRACE_ID": f"Root={TRACE_ROOT};Parent=53995c3f42cd8ad8;Sampled=1",
                    "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{xray_daemon.getsockname()[1]}",
                    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
                }
            )
        out = tmp_path / "result.json"
        proc = subprocess.run(
            [lambda_python, "-I", "-S", "-c", DRIVER, str(task), str(runtime), str(tmp_path / "event.json"), str(out)],
            capture_output=True,
            text=True,
            timeout=HANDLER_TIMEOUT_S,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-4000:])
        run = json.loads(out.read_text())
        print(f"\nhandler from the artifact: {run['seconds']:.1f} s, {run['forks']} fork(s)")

        # Imported from the artifact (and boto3 from the runtime stand-in), nothing else.
        assert run["sys_path"][:2] == [str(task), str(runtime)]
        for module, path in run["files"].items():
            root = runtime if module == "boto3" else task
            assert path.startswith(str(root) + os.sep), f"{module} imported from {path}"
        assert run["files"]["handlers.worker"] == str(task / "handlers" / "worker.py")
        assert run["files"]["pipeline"] == str(task / "pipeline" / "__init__.py")
        assert run["forks"] >= 1, "the worker forked no encoder process"

        assert run["result"] == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=msg["ReceiptHandle"])  # Lambda's part

        zip_key = f"{stack.target_prefix}{STUDY_PATH}.zip"
        record_key = f"{stack.target_prefix}{STUDY_PATH}.result.json"
        zip_bytes = s3.get_object(Bucket=stack.bucket, Key=zip_key)["Body"].read()
        record = json.loads(s3.get_object(Bucket=stack.bucket, Key=record_key)["Body"].read())
        assert record["status"] == "succeeded", record.get("error") or record.get("warnings")
        assert record["study"]["prefix"] == prefix and record["study"]["marker"] == "_READY"
        assert record["totals"]["files"] == len(files)
        # The CT images were re-encoded (in the forked encoder process) and verified.
        assert record["totals"]["compressed"] == len(files) - 1  # all but the SR document
        assert record["verification"]["lossy"] == record["totals"]["compressed"]
        assert record["timings"]["encoders"] >= 1
        assert record["output"]["sha256"] == hashlib.sha256(zip_bytes).hexdigest()
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            assert zf.testzip() is None
            assert zf.namelist() == FIXTURE_ORDER
            ds = pydicom.dcmread(io.BytesIO(zf.read("CT1/01.dcm")))
        assert ds.file_meta.TransferSyntaxUID == JPEG2000_LOSSY
        # The lock was released (DeleteObject on compressed/*.lock, as the role allows).
        leftovers = s3.list_objects_v2(Bucket=stack.bucket, Prefix=stack.target_prefix).get("Contents", [])
        assert sorted(o["Key"] for o in leftovers) == sorted([zip_key, record_key])

        note = _receive(
            sqs,
            stack.notification_queue_url,
            lambda body: body.get("detail", {}).get("study", {}).get("prefix") == prefix,
        )
        body = json.loads(note["Body"])
        assert body["source"] == "dicom.compression"
        assert body["detail-type"] == "Study Compressed"
        assert body["detail"]["status"] == "succeeded"
        assert body["detail"]["output"]["zipKey"] == zip_key

    segments = _xray_segments(xray_daemon)
    if tracing == "disabled":
        assert segments == []
        return
    names = {d.get("name") for d in segments}
    assert {"## handler", "## handlers.worker.record_handler", "s3", "events"} <= names, names
    assert {d.get("trace_id") for d in segments} == {TRACE_ROOT}
    # The only failed calls are the worker's 404 probes (manifest.json, an earlier record).
    failed = {
        (d.get("aws", {}).get("operation"), d.get("http", {}).get("response", {}).get("status"))
        for d in segments
        if d.get("fault") or d.get("error")
    }
    assert failed <= {("HeadObject", 404), ("GetObject", 404)}, failed
