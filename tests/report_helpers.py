"""Shared by the report tests: real runs of the CLI, and what a report's HTML holds."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom

ROOT = Path(__file__).resolve().parents[1]
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def compress(study: Path, zip_path: Path, *options: str) -> dict[str, Any]:
    """``python -m pipeline compress`` in a child process, as a user runs it; the record."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "compress", str(study), "-o", str(zip_path), "--workers", "2", *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(zip_path.with_suffix(".result.json").read_text())


def pngs(html: str) -> list[bytes]:
    """Every inline PNG image of a report."""
    return [base64.b64decode(m.group(1)) for m in DATA_URI.finditer(html)]


def add_quality_floor(record: dict[str, Any], study: Path, floor: float = 40.0) -> dict[str, Any]:
    """The fields the quality floor adds to a record, computed for real where they can be:
    ``rangePsnrDb`` from each lossy file's source range (all frames) and recorded RMSE; a
    ``floor`` entry per lossy file (images under the floor marked as re-encoded, the ZIP
    itself unchanged); the study-level minimum and count."""
    ranged = []
    for f in record["files"]:
        check = f.get("verification") or {}
        if check.get("status") != "lossy" or not check.get("rmse"):
            continue
        try:
            pixels = pydicom.dcmread(study / f["path"]).pixel_array
        except Exception:  # noqa: BLE001, S112 - decoded by the pipeline's own route only
            continue
        value_range = float(pixels.max()) - float(pixels.min())
        if value_range <= 0:
            continue
        check["rangePsnrDb"] = round(20 * math.log10(value_range / check["rmse"]), 2)
        ranged.append(f)
    interventions = 0
    for f in ranged:
        got = f["verification"]["rangePsnrDb"]
        if got < floor:
            interventions += 1
            f["floor"] = {"minPsnrDb": floor, "askedRate": 100, "action": "reencoded",
                          "detail": f"rate 100 gave {got:.1f} dB < {floor:g}: re-encoded at 9.8:1, 41.3 dB"}
        else:
            f["floor"] = {"minPsnrDb": floor, "askedRate": 100, "action": "met", "detail": f"rate 100 gave {got:.1f} dB"}
    record["settings"]["minPsnrDb"] = floor
    record["verification"]["minRangePsnrDb"] = min(f["verification"]["rangePsnrDb"] for f in ranged)
    record["totals"]["floorInterventions"] = interventions
    return record
