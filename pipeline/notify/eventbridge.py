"""``Study Compressed`` / ``Study Compression Failed`` events: where things are and how it went.

The detail carries locations, status, totals, settings and the manifest's ``metadata``: no
per-file list, no header values.
"""

from __future__ import annotations

import json
from typing import Any

SOURCE = "dicom.compression"
COMPRESSED = "Study Compressed"
FAILED = "Study Compression Failed"
_TOTAL_KEYS = (
    "files",
    "compressed",
    "kept",
    "fileWarnings",
    "bytesIn",
    "bytesOut",
    "ratio",
    "pixelRatio",
    "floorInterventions",
)


def event_detail(record: dict[str, Any], *, study: dict[str, str], output: dict[str, str]) -> dict[str, Any]:
    """The event detail built from a final result record."""
    detail: dict[str, Any] = {
        "status": record["status"],
        "study": study,
        "output": output,
        "settings": record.get("settings"),
        "inputFingerprint": record.get("inputFingerprint"),
        "metadata": record.get("metadata"),
    }
    if record.get("totals"):
        detail["totals"] = {k: record["totals"][k] for k in _TOTAL_KEYS if k in record["totals"]}
    if record.get("verification"):
        v = record["verification"]
        detail["verification"] = {
            k: v.get(k) for k in ("bitExact", "lossy", "minPsnrDb", "minRangePsnrDb", "maxAbsError")
        }
    detail["error"] = record.get("error")
    detail["warningCount"] = len(record.get("warnings") or [])
    return detail


def publish(events: Any, bus_name: str, detail: dict[str, Any]) -> None:
    """Put one event; raises if EventBridge did not accept it (so the message is retried)."""
    detail_type = FAILED if detail["status"] == "failed" else COMPRESSED
    resp = events.put_events(
        Entries=[{"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail), "EventBusName": bus_name}]
    )
    if resp.get("FailedEntryCount"):
        code = resp["Entries"][0].get("ErrorCode", "unknown")
        raise RuntimeError(f"EventBridge rejected the event: {code}")
