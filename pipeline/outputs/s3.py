"""Outputs in S3: the ZIP as a multipart upload (never visible until complete), records as JSON."""

from __future__ import annotations

import io
import json
import queue
import threading
from typing import Any

# S3's smallest allowed part (all but the last): the least memory an upload can hold. Parts grow
# by this much every 2,000, so the 10,000-part limit still allows about 146 GiB.
PART_SIZE = 5 * 1024 * 1024
PARTS_PER_STEP = 2000
# One part uploading while the next fills: outputs arrive far slower than one upload stream.
MAX_PARTS_IN_FLIGHT = 1


class MultipartSink:
    """A forward-only writer that uploads parts in a background thread.

    Memory is bounded and small: the part being filled, ``MAX_PARTS_IN_FLIGHT`` queued and the
    one uploading: 15 MiB at most for outputs below 50 GiB.
    ``complete()`` makes the object appear at once; ``abort()`` leaves nothing behind.
    """

    def __init__(self, s3: Any, bucket: str, key: str, part_size: int = PART_SIZE) -> None:
        self.s3, self.bucket, self.key, self.part_size = s3, bucket, key, part_size
        self.upload_id: str | None = None
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[int, bytes | bytearray] | None] = queue.Queue(MAX_PARTS_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._next_part = 1

    def _start(self) -> None:
        resp = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType="application/zip")
        self.upload_id = resp["UploadId"]
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            number, body = item
            del item  # only ``body`` holds the part now, and it is dropped as soon as it is sent
            if self._error is not None:
                del body
                continue
            try:
                etag = self.s3.upload_part(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
                )["ETag"]
                self._parts.append({"PartNumber": number, "ETag": etag})
            except BaseException as exc:  # surfaced to the writer on its next call
                self._error = exc
            del body

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _flush_part(self, body: bytes | bytearray) -> None:
        if self._thread is None:
            self._start()
        self._raise_if_failed()
        self._queue.put((self._next_part, body))
        self._next_part += 1

    def _part_target(self) -> int:
        return self.part_size * (1 + (self._next_part - 1) // PARTS_PER_STEP)

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        while view:
            size = self._part_target()
            if not self._buffer and len(view) >= size:  # a whole part straight from the caller's bytes
                self._flush_part(bytes(view[:size]))
                view = view[size:]
                continue
            room = size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= size:
                body, self._buffer = self._buffer, bytearray()  # handed over whole: no copy
                self._flush_part(body)
        return len(data)

    def complete(self) -> None:
        """Upload what is left and make the object visible."""
        if self._thread is None:  # small output: one plain PUT is atomic too
            self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer), ContentType="application/zip"
            )
            return
        if self._buffer:
            self._flush_part(bytes(self._buffer))
            self._buffer.clear()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        parts = sorted(self._parts, key=lambda p: p["PartNumber"])
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
        )

    def abort(self) -> None:
        """Drop the upload (best effort: the bucket's lifecycle rule is the backstop)."""
        if self._thread is not None:
            self._error = self._error or RuntimeError("aborted")
            self._queue.put(None)
            self._thread.join(timeout=30)
        if self.upload_id:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:
                pass


def json_bytes(doc: dict[str, Any]) -> bytes:
    """Indented UTF-8 JSON. Encoded chunk by chunk: ``json.dumps`` with an indent first collects
    every small chunk in a list (14 MB for a 2.4 MB record of 3,900 files), this holds only the output."""
    out = io.BytesIO()
    for chunk in json.JSONEncoder(indent=2, ensure_ascii=False).iterencode(doc):
        out.write(chunk.encode("utf-8"))
    out.write(b"\n")
    return out.getvalue()


def put_json(s3: Any, bucket: str, key: str, doc: dict[str, Any]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json_bytes(doc), ContentType="application/json")


def get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON object at ``key``, or ``None`` when there is none (or it is not JSON)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        from pipeline.aws import error_code

        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def abort_stale_uploads(s3: Any, bucket: str, key: str) -> int:
    """Abort multipart uploads left at ``key`` by earlier, killed attempts."""
    aborted = 0
    resp = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in resp.get("Uploads", []):
        if upload["Key"] == key:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
            aborted += 1
    return aborted
