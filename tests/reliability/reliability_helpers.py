"""Helpers shared by the reliability tests: real studies, real worker processes, what S3 and SQS hold.

Nothing here mocks the pipeline. Waits are on conditions (an object appears, a queue drains),
bounded by :data:`SAFETY_TIMEOUT` only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from e2e_helpers import drain  # noqa: E402  (tests/ is on sys.path, as for the other reliability tests)

from bench.measure import cpu_seconds  # noqa: F401  (re-exported for the reliability tests)

ROOT = Path(__file__).resolve().parents[2]
SAFETY_TIMEOUT = 180.0  # a hang guard, never an assertion about speed

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, *, timeout: float = SAFETY_TIMEOUT, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(interval)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- studies


def ct_slices(corpus: Path) -> list[Path]:
    """The corpus' 512x512 uncompressed CT slices (real patient-free CT, ~514 KiB each)."""
    with open(corpus / "MANIFEST.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = [
        corpus / r["file"]
        for r in rows
        if r["category"] == "ct-series" and r["rows"] == "512" and r["cols"] == "512"
        and r["transfer_syntax"] == "Explicit VR Little Endian"
    ]
    assert len(out) >= 60, "the corpus should hold at least 60 512x512 CT slices"
    return sorted(out)


def make_ct_study(corpus: Path, dest: Path, n: int, *, folder: str = "CT") -> Path:
    """``n`` real CT slices (cycling through the corpus) as ``dest/folder/IM1 .. IMn`` (natural order)."""
    slices = ct_slices(corpus)
    (dest / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = dest / folder / f"IM{i + 1}"
        shutil.copyfile(slices[i % len(slices)], target)
        target.chmod(0o644)
    return dest


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest_bytes(files: dict[str, bytes], **options: Any) -> bytes:
    doc = {**options, "files": [{"path": p, "size": len(d), "sha256": sha256(d)} for p, d in files.items()]}
    return json.dumps(doc).encode()


def upload_files(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=prefix + item[0], Body=item[1]), files.items()))


def local_reference(study_dir: Path, settings: Any, *, workers: int = 2) -> tuple[bytes, list[dict[str, Any]]]:
    """A clean run of ``study_dir`` through the local-folder API: (ZIP bytes, the record's ``files``)."""
    from pipeline.engine import Study, compress_study
    from pipeline.outputs.record import build_record
    from pipeline.study.source import LocalStudySource

    buf = io.BytesIO()

    class Sink:
        def write(self, data: bytes) -> int:
            return buf.write(data)

    run = compress_study(Study.from_source(LocalStudySource(study_dir)), Sink(), settings, encoders=workers)
    record = build_record(run, output={})
    return buf.getvalue(), record["files"]


def zip_names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return [i.filename for i in zf.infolist()]


# --------------------------------------------------------------------------- S3 / SQS state


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def open_uploads(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def get_record(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    data = get_bytes(s3, bucket, key)
    return json.loads(data) if data is not None else None


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


@dataclass
class EventLog:
    """Events that reached the notification queue, kept across reads (the queue is drained)."""

    sqs: Any
    url: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        self.events.extend(json.loads(m["Body"]) for m in drain(self.sqs, self.url))
        return self.events

    def for_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["detail"]["study"]["prefix"] == prefix]


def run_until_idle(queue_url: str, handler: Callable[..., Any], *, retry_delay: int = 1, **kw: Any) -> int:
    """Play Lambda (``poll_once``) until the study queue has nothing visible or in flight."""
    from pipeline.aws import client
    from devstack.poller import poll_once

    sqs = client("sqs")
    polls = 0
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while queue_counts(sqs, queue_url) != (0, 0):
        assert time.monotonic() < deadline, f"study queue not idle: {queue_counts(sqs, queue_url)}"
        polls += poll_once(queue_url, handler, wait_seconds=1, retry_delay=retry_delay, **kw)
    return polls


def drop_pending(sqs: Any, queue_url: str) -> None:
    """Consume what the stack's creation left on the study queue (the s3:TestEvent)."""
    for m in drain(sqs, queue_url):
        assert "s3:TestEvent" in m["Body"], m["Body"][:200]


# --------------------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, from /proc; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pid:
                out.append(int(entry.name))
    return out


class WorkerProcess:
    """``python -m devstack poll QUEUE_URL`` as its own process, output kept in files."""

    def __init__(self, stack: Any, workdir: Path, name: str, **extra_env: str) -> None:
        self.stack = stack
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.env = {**os.environ, **stack.env(), **extra_env}
        self.env["PYTHONPATH"] = str(ROOT)
        self.proc: subprocess.Popen[bytes] | None = None
        self.known_children: set[int] = set()

    def start(self) -> WorkerProcess:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:  # the child keeps its copies
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devstack", "poll", self.stack.queue_url],
                cwd=ROOT, env=self.env, stdout=out, stderr=err,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        found = children_of(self.pid)
        self.known_children.update(found)
        return found

    def kill(self) -> None:
        """SIGKILL the worker process itself (not its children: what they do next is under test)."""
        assert self.proc is not None
        self.children()
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Ctrl-C (the worker loop's way out), then make sure nothing it started is left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.children()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for pid in self.known_children:  # only processes this worker forked
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def logs(self) -> list[dict[str, Any]]:
        """The structured JSON log lines (powertools) the worker printed."""
        out = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict) and "message" in doc:
                    out.append(doc)
        return out

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


def messages(logs: Iterable[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [line for line in logs if str(line.get("message", "")).startswith(text)]


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


# --------------------------------------------------------------------------- S3 fault injection


class _RawBody:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self.data


def s3_error(request: Any, status: int, code: str, message: str = "injected by the reliability tests") -> Any:
    """An S3 error response, as botocore would have received it over the wire."""
    from botocore.awsrequest import AWSResponse

    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>INJECTED</RequestId><HostId>INJECTED</HostId></Error>").encode()
    headers = {"Content-Type": "application/xml", "Content-Length": str(len(body)), "x-amz-request-id": "INJECTED"}
    return AWSResponse(request.url, status, headers, _RawBody(body))


def request_key(request: Any, bucket: str) -> str:
    """The object key a prepared S3 request is for (path-style or virtual-hosted URL)."""
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(request.url).path)
    return path.split(f"/{bucket}/", 1)[1] if f"/{bucket}/" in path else path.lstrip("/")


class S3Faults:
    """``before-send`` hooks on one botocore client: ``decide(operation, request)`` may return
    ``(status, code)`` to answer that request with an S3 error instead of sending it."""

    def __init__(self, s3: Any, operations: Iterable[str], decide: Callable[[str, Any], tuple[int, str] | None]) -> None:
        from collections import Counter

        self.s3 = s3
        self.operations = list(operations)
        self.decide = decide
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[str, str, int | None]] = []
        self._handlers: list[tuple[str, Callable[..., Any]]] = []
        import threading

        self._lock = threading.RLock()

    def _handler(self, operation: str) -> Callable[..., Any]:
        def hook(request: Any, **_: Any) -> Any:
            with self._lock:  # the ZIP's parts are uploaded from a thread of their own
                self.calls[operation] += 1
                verdict = self.decide(operation, request)
                self.log.append((operation, request.url, verdict[0] if verdict else None))
                if verdict is not None:
                    self.injected[operation] += 1
            return None if verdict is None else s3_error(request, *verdict)

        return hook

    def __enter__(self) -> Self:
        for op in self.operations:
            hook = self._handler(op)
            self.s3.meta.events.register(f"before-send.s3.{op}", hook)
            self._handlers.append((op, hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for op, hook in self._handlers:
            self.s3.meta.events.unregister(f"before-send.s3.{op}", hook)
        self._handlers.clear()
