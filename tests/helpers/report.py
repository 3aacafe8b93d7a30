"""Shared by the report tests: real runs of the CLI, and what a report's HTML holds."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.paths import ROOT

DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def compress(study: Path, zip_path: Path, *options: str) -> dict[str, Any]:
    """``python -m pipeline compress`` in a child process, as a user runs it; the record."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "compress", str(study), "-o", str(zip_path), "--workers", "2", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(zip_path.with_suffix(".result.json").read_text())


def pngs(html: str) -> list[bytes]:
    """Every inline PNG image of a report."""
    return [base64.b64decode(m.group(1)) for m in DATA_URI.finditer(html)]
