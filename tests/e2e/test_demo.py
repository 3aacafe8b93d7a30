"""``make demo`` (``python -m devstack demo``), as the README's first command is met on a fresh
checkout: it must end with the fixture study compressed, and say so. And ``submit`` refuses a
folder with nothing in it instead of uploading an empty manifest."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import ROOT


def test_demo_compresses_the_fixture_study_and_shows_the_outputs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "uploaded 11 files, then manifest.json" in out
    assert "status: succeeded" in out
    assert "== ZIP s3://dicom-compression-local-data/compressed/clinic-7/2025-08-27/ct-nested-001.zip ==" in out
    assert '"detail-type": "Study Compressed"' in out or "Study Compressed" in out


def test_submit_refuses_a_folder_with_no_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        done = subprocess.run(
            [sys.executable, "-m", "devstack", "submit", str(folder), "s3://bucket/incoming/clinic-1/s/"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},  # nothing may be contacted
        )
        assert done.returncode == 2, done.stderr
        assert "nothing to submit" in done.stderr
