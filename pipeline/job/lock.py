"""One job per study at a time: a lock object taken with a conditional PUT (``If-None-Match``).

A lock not refreshed for ``stale_seconds`` belongs to a dead worker and is taken over.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pipeline.aws import error_code
from pipeline.job.errors import RetryLater
from pipeline.observability import logger

_TAKEN = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class StudyLock:
    def __init__(self, s3: Any, bucket: str, key: str, *, fingerprint: str, stale_seconds: int) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.fingerprint = fingerprint
        self.stale_seconds = stale_seconds

    def _body(self) -> bytes:
        return json.dumps({"fingerprint": self.fingerprint, "since": time.time()}).encode()

    def acquire(self) -> None:
        """Take the lock; raises :class:`RetryLater` while a live worker holds it."""
        body = self._body()
        for _ in range(2):
            try:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
                return
            except Exception as exc:
                if error_code(exc) not in _TAKEN:
                    raise
            held = self._held()
            if time.time() - float(held.get("since", 0)) < self.stale_seconds:
                raise RetryLater("another worker is compressing this study")
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)  # its holder died: take over
        raise RetryLater("could not take the study lock")

    def _held(self) -> dict[str, Any]:
        from pipeline.outputs.s3 import get_json

        return get_json(self.s3, self.bucket, self.key) or {}

    def refresh(self) -> None:
        """Still alive: a lock refreshed within ``stale_seconds`` is not taken over."""
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body())

    def release(self) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception:
            logger.warning("could not release study lock", extra={"lock": self.key})
