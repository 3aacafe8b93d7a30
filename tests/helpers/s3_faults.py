"""S3 faults injected into one botocore client: ``before-send`` hooks answer chosen requests with
an S3 error, as botocore would have received it over the wire."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Self


class _RawBody:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self.data


def s3_error(request: Any, status: int, code: str, message: str = "injected by the reliability tests") -> Any:
    """An S3 error response, as botocore would have received it over the wire."""
    from botocore.awsrequest import AWSResponse

    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>INJECTED</RequestId><HostId>INJECTED</HostId></Error>"
    ).encode()
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

    def __init__(
        self, s3: Any, operations: Iterable[str], decide: Callable[[str, Any], tuple[int, str] | None]
    ) -> None:
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
