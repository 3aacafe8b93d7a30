"""The result record: the JSON written next to the ZIP, the single source of truth about a study.

It holds paths, sizes, transfer syntaxes, UIDs of changed instances and measurements, never
header values such as names, IDs or dates.
"""

from __future__ import annotations

import platform
import statistics
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pipeline import __version__

if TYPE_CHECKING:  # the engine (and numpy with it) is not needed to build a record
    from pipeline.engine import StudyRun

SCHEMA_VERSION = 1
#: What every ``rangePsnrDb`` in the record means (README "Quality floor").
RANGE_PSNR_DEFINITION = "20*log10((max - min of the source image) / RMSE), over all frames of an object"
SUCCEEDED = "succeeded"
SUCCEEDED_WITH_WARNINGS = "succeeded_with_warnings"
FAILED = "failed"
PROCESSING = "processing"


def software_versions() -> dict[str, str]:
    """Versions that determine the output bytes."""
    versions = {"pipeline": __version__, "python": platform.python_version()}
    for dist in ("pydicom", "pylibjpeg-openjpeg", "numpy", "imagecodecs"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _totals(run: StudyRun) -> dict[str, Any]:
    outcomes = run.outcomes
    bytes_in = sum(o.bytes_in for o in outcomes)
    pixel_in = sum(o.pixel_bytes_in or 0 for o in outcomes if o.action == "compressed")
    pixel_out = sum(o.pixel_bytes_out or 0 for o in outcomes if o.action == "compressed")
    return {
        "files": len(outcomes),
        "compressed": sum(o.action == "compressed" for o in outcomes),
        "kept": sum(o.action == "kept" for o in outcomes),
        "fileWarnings": sum(o.warning for o in outcomes),
        "ignored": len(run.study.ignored),
        "bytesIn": bytes_in,
        "bytesOut": run.archive.size,
        "ratio": round(bytes_in / run.archive.size, 3) if run.archive.size else None,
        "pixelBytesIn": pixel_in,
        "pixelBytesOut": pixel_out,
        "pixelRatio": round(pixel_in / pixel_out, 3) if pixel_out else None,
        "floorInterventions": sum(1 for o in outcomes if o.floor and o.floor["action"] != "met"),
    }


def _verification(run: StudyRun) -> dict[str, Any]:
    checks = [o.verification for o in run.outcomes if o.verification]
    psnrs = [c["psnrDb"] for c in checks if c.get("status") == "lossy" and c.get("psnrDb") is not None]
    errors = [c["maxAbsError"] for c in checks if c.get("status") == "lossy"]
    ranged = [c["rangePsnrDb"] for c in checks if c.get("status") == "lossy" and c.get("rangePsnrDb") is not None]
    return {
        "enabled": run.settings.verify,
        "bitExact": sum(c.get("status") == "bit-exact" for c in checks),
        "lossy": sum(c.get("status") == "lossy" for c in checks),
        "skipped": sum(c.get("status") == "skipped" for c in checks),
        "minPsnrDb": min(psnrs) if psnrs else None,
        "minRangePsnrDb": min(ranged) if ranged else None,
        "rangePsnrDefinition": RANGE_PSNR_DEFINITION,
        "meanPsnrDb": round(statistics.fmean(psnrs), 2) if psnrs else None,
        "maxAbsError": max(errors) if errors else None,
    }


def build_record(run: StudyRun, *, output: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The final record of a study that produced a ZIP."""
    record: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "status": SUCCEEDED_WITH_WARNINGS if run.has_warnings else SUCCEEDED,
        "error": None,
        "study": {"name": run.study.source.name, "location": run.study.source.location},
        "settings": run.settings.describe(),
        "output": {**output, "size": run.archive.size, "sha256": run.archive.sha256, "entries": run.archive.entries},
        "totals": _totals(run),
        "verification": _verification(run),
        "warnings": run.warnings + [f"{o.path}: {o.reason}" for o in run.outcomes if o.warning],
        "files": [o.to_record() for o in run.outcomes],
        "ignored": [{"path": i.path, "reason": i.reason} for i in run.study.ignored],
        "timings": {
            **run.timings,
            "encoders": run.encoders,
            "spooledBytes": run.spooled_bytes,
            "memoryBudget": run.budget.describe() if run.budget else None,
        },
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "software": software_versions(),
    }
    record.update(extra or {})
    return record


def failed_record(
    *,
    name: str,
    location: str,
    settings: dict[str, Any] | None,
    error: str,
    code: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a study that could not be compressed; ``error`` must be free of patient data."""
    record: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "status": FAILED,
        "error": {"code": code, "message": error},
        "study": {"name": name, "location": location},
        "settings": settings,
        "software": software_versions(),
    }
    record.update(extra or {})
    return record


def processing_record(
    *,
    study: dict[str, str],
    output: dict[str, str],
    done: int,
    total: int,
    heartbeat: str,
    started: str,
    fingerprint: str,
    settings: dict[str, Any] | None,
) -> dict[str, Any]:
    """The record while a study is being compressed: how far it is, refreshed by the heartbeat."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "status": PROCESSING,
        "study": study,
        "output": output,
        "progress": {"filesDone": done, "filesTotal": total, "heartbeat": heartbeat},
        "startedAt": started,
        "inputFingerprint": fingerprint,
        "settings": settings,
    }


def summary_lines(record: dict[str, Any]) -> list[str]:
    """A one-screen human summary of a record."""
    lines = [f"status: {record['status']}"]
    if record.get("error"):
        lines.append(f"error: {record['error']['code']}: {record['error']['message']}")
        return lines
    t, v, o = record["totals"], record["verification"], record["output"]
    lines.append(f"files: {t['files']} ({t['compressed']} compressed, {t['kept']} kept as-is, {t['ignored']} ignored)")
    lines.append(f"bytes: {t['bytesIn']:,} in -> {t['bytesOut']:,} ZIP (x{t['ratio']}); pixel data x{t['pixelRatio']}")
    if v["enabled"]:
        lossy = (
            f", lossy {v['lossy']} (PSNR min {v['minPsnrDb']} dB, mean {v['meanPsnrDb']} dB, max error {v['maxAbsError']})"
            if v["lossy"]
            else ""
        )
        lines.append(f"verified: bit-exact {v['bitExact']}{lossy}")
    floor = (record.get("settings") or {}).get("minPsnrDb")
    if floor:
        touched = [f for f in record["files"] if (f.get("floor") or {}).get("action") in ("reencoded", "lossless")]
        lossless = sum(1 for f in touched if f["floor"]["action"] == "lossless")
        lines.append(
            f"quality floor {floor:g} dB range-PSNR: {len(touched)} image(s) re-encoded to meet it"
            f" ({lossless} lossless); lowest range-PSNR {v.get('minRangePsnrDb')} dB"
        )
    lines.append(f"zip: {o.get('path') or o.get('key')} sha256 {o['sha256'][:16]}…")
    lines.append(f"time: {record['timings']['total']} s with {record['timings']['encoders']} encoder(s)")
    for w in record["warnings"][:10]:
        lines.append(f"warning: {w}")
    if len(record["warnings"]) > 10:
        lines.append(f"... and {len(record['warnings']) - 10} more warnings (see the result record)")
    return lines
