"""What the worker announced: EventBridge events as they reached the notification queue, and the
documented shape of a ``Study Compressed`` / ``Study Compression Failed`` event."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.helpers.aws import drain

SOURCE = "dicom.compression"
COMPRESSED = "Study Compressed"
FAILED = "Study Compression Failed"
#: Keys every event detail has (see pipeline/notify/eventbridge.py).
DETAIL_KEYS = {"status", "study", "output", "settings", "inputFingerprint", "metadata"}
#: The totals an event carries; the per-file list and pixel byte counts stay in the record.
EVENT_TOTAL_KEYS = {
    "files",
    "compressed",
    "kept",
    "fileWarnings",
    "bytesIn",
    "bytesOut",
    "ratio",
    "pixelRatio",
    "floorInterventions",
}


@dataclass
class Event:
    """One EventBridge event as it reached the notification queue."""

    raw: dict[str, Any]

    @property
    def detail_type(self) -> str:
        return self.raw["detail-type"]

    @property
    def detail(self) -> dict[str, Any]:
        return self.raw["detail"]

    @property
    def prefix(self) -> str:
        return self.detail["study"]["prefix"]


def read_events(sqs: Any, note_url: str) -> list[Event]:
    """The events now on the notification queue (drained)."""
    return [Event(json.loads(m["Body"])) for m in drain(sqs, note_url)]


@dataclass
class EventLog:
    """Events that reached the notification queue, kept across reads (the queue is drained)."""

    sqs: Any
    url: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        self.events.extend(e.raw for e in read_events(self.sqs, self.url))
        return self.events

    def for_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["detail"]["study"]["prefix"] == prefix]


def check_event_shape(event: Event, *, bucket: str) -> None:
    """The documented shape of a ``Study Compressed`` / ``Study Compression Failed`` event."""
    raw = event.raw
    assert raw["source"] == SOURCE
    assert raw["detail-type"] in (COMPRESSED, FAILED)
    detail = event.detail
    assert DETAIL_KEYS <= set(detail), sorted(detail)
    assert "files" not in detail
    assert set(detail["study"]) == {"bucket", "prefix", "marker"}
    assert detail["study"]["bucket"] == bucket
    assert detail["study"]["marker"] in ("_READY", "manifest.json")
    assert set(detail["output"]) == {"bucket", "zipKey", "recordKey"}
    assert detail["output"]["zipKey"].endswith(".zip")
    assert detail["output"]["recordKey"] == detail["output"]["zipKey"][: -len(".zip")] + ".result.json"
    if raw["detail-type"] == COMPRESSED:
        assert detail["status"] in ("succeeded", "succeeded_with_warnings")
        assert set(detail["totals"]) == EVENT_TOTAL_KEYS
        assert set(detail["verification"]) == {"bitExact", "lossy", "minPsnrDb", "minRangePsnrDb", "maxAbsError"}
        assert detail.get("error") is None  # README shows "error": null; the code leaves it out
        assert set(detail["settings"]) == {"mode", "rate", "codec", "verify", "minPsnrDb"}
    else:
        assert detail["status"] == "failed"
        assert set(detail["error"]) == {"code", "message"}
