"""S3 notifications, as delivered through SQS, to :class:`StudyTrigger`s.

S3 delivers at least once, URL-encodes keys (``+`` for spaces), sends an ``s3:TestEvent``
when a notification is configured, and anyone able to send to the queue can send anything:
every message is either a trigger or an explicit :class:`Dropped` reason.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote_plus

from pipeline.study.listing import TRIGGER_NAMES

MAX_BODY_BYTES = 256 * 1024  # SQS's own message limit
MAX_KEY_BYTES = 1024  # S3's key limit: a longer "key" cannot name a real marker object


@dataclass(frozen=True)
class StudyTrigger:
    """A marker object was created: the study is the folder that holds it."""

    bucket: str
    key: str
    event_name: str
    event_time: str | None = None
    size: int | None = None

    @property
    def marker(self) -> str:
        return posixpath.basename(self.key)

    @property
    def study_prefix(self) -> str:
        """The study folder's key prefix, ending with ``/``."""
        return posixpath.dirname(self.key) + "/"


@dataclass(frozen=True)
class Dropped:
    """A message that is not a study trigger, and why (logged; never retried)."""

    reason: str


def parse_body(body: str, *, bucket: str, source_prefix: str) -> list[StudyTrigger | Dropped]:
    """Triggers (and drop reasons) in one SQS message body."""
    if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        return [Dropped("message body larger than SQS allows")]
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return [Dropped("message body is not JSON")]
    if not isinstance(doc, dict):
        return [Dropped("message body is not a JSON object")]
    if doc.get("Event") == "s3:TestEvent":
        return [Dropped("s3:TestEvent (sent when a notification is configured)")]
    if isinstance(doc.get("Message"), str) and doc.get("Type") == "Notification":  # via SNS
        return parse_body(doc["Message"], bucket=bucket, source_prefix=source_prefix)
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        return [Dropped("not an S3 event notification")]
    return [_parse_record(r, bucket=bucket, source_prefix=source_prefix) for r in records]


def _parse_record(record: object, *, bucket: str, source_prefix: str) -> StudyTrigger | Dropped:
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        return Dropped("record is not from S3")
    event_name = str(record.get("eventName", ""))
    if not event_name.startswith("ObjectCreated:"):
        return Dropped(f"not an object-created event ({event_name[:40]})")
    s3 = record.get("s3")
    if not isinstance(s3, dict) or not isinstance(s3.get("bucket"), dict) or not isinstance(s3.get("object"), dict):
        return Dropped("S3 record without bucket or object")
    name = s3["bucket"].get("name")
    raw_key = s3["object"].get("key")
    if not isinstance(name, str) or not isinstance(raw_key, str):
        return Dropped("S3 record without bucket name or key")
    if name != bucket:
        return Dropped("event for another bucket")
    key = unquote_plus(raw_key)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return Dropped(f"key longer than S3 allows ({MAX_KEY_BYTES:,} bytes)")
    if not key.startswith(source_prefix) or key == source_prefix:
        return Dropped("key outside the source prefix")
    if posixpath.basename(key) not in TRIGGER_NAMES:
        return Dropped("object is not a study marker")
    if posixpath.dirname(key) + "/" == source_prefix:
        return Dropped("marker directly under the source prefix: a study needs its own folder")
    if any(part in ("", ".", "..") for part in key[len(source_prefix) :].split("/")):
        return Dropped("marker key has empty, '.' or '..' path segments")
    size = s3["object"].get("size")
    return StudyTrigger(
        bucket=name,
        key=key,
        event_name=event_name,
        event_time=record.get("eventTime") if isinstance(record.get("eventTime"), str) else None,
        size=size if isinstance(size, int) else None,
    )
