"""``python -m pipeline compress``, run as a user runs it: a subprocess on the fixture study."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom

from tests.helpers.guards import run_or_fail
from tests.helpers.paths import ROOT

HANG_GUARD_SECONDS = 300  # a hang guard, never an assertion about speed
FIXTURE_FILES = 11
FIXTURE_IMAGES = 10


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COMPRESSION_RATE", "CODEC", "VERIFY")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "pipeline", *args]
    return run_or_fail(
        command, cwd=cwd, env=env, timeout=HANG_GUARD_SECONDS, what=f"python -m pipeline {' '.join(args)}"
    )


def outputs(zip_path: Path) -> tuple[dict, list[str]]:
    record_path = zip_path.with_name(zip_path.name[: -len(".zip")] + ".result.json")
    assert zip_path.is_file() and record_path.is_file()
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
    return json.loads(record_path.read_text()), names


def test_compress_lossless(fixture_study, tmp_path):
    out = tmp_path / "OUT.zip"
    proc = run_cli("compress", str(fixture_study), "-o", str(out), "--lossless")
    assert proc.returncode == 0, proc.stderr
    record, names = outputs(out)
    assert len(names) == FIXTURE_FILES
    assert record["status"] == "succeeded"
    assert record["settings"]["mode"] == "lossless"
    assert record["totals"]["files"] == FIXTURE_FILES and record["totals"]["compressed"] == FIXTURE_IMAGES
    assert record["verification"]["bitExact"] == FIXTURE_IMAGES
    assert record["output"]["sha256"][:16] in proc.stdout
    # The summary says how many files there were and where the record is.
    assert re.search(rf"\bfiles: {FIXTURE_FILES}\b", proc.stdout), proc.stdout
    assert "OUT.result.json" in proc.stdout
    assert "succeeded" in proc.stdout
    assert not list(tmp_path.glob("*.part"))


def test_compress_rate_50(fixture_study, tmp_path):
    out = tmp_path / "rate50.zip"
    proc = run_cli("compress", str(fixture_study), "-o", str(out), "--rate", "50")
    assert proc.returncode == 0, proc.stderr
    record, _ = outputs(out)
    assert record["settings"]["mode"] == "lossy" and record["settings"]["rate"] == 50
    assert record["status"] == "succeeded"
    assert record["verification"]["lossy"] == FIXTURE_IMAGES
    t = record["totals"]
    assert 40 <= t["pixelBytesIn"] / t["pixelBytesOut"] <= 60, t
    with zipfile.ZipFile(out) as zf:
        ds = pydicom.dcmread(io.BytesIO(zf.read("CT2/I100")))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert ds.LossyImageCompression == "01"
    ratios = ds.LossyImageCompressionRatio
    ratios = list(ratios) if ds["LossyImageCompressionRatio"].VM > 1 else [ratios]
    assert 40 <= float(ratios[-1]) <= 60


def test_missing_folder_exits_non_zero_with_an_error(tmp_path):
    missing = tmp_path / "no-such-study"
    out = tmp_path / "x.zip"
    proc = run_cli("compress", str(missing), "-o", str(out))
    assert proc.returncode != 0
    assert "error" in proc.stderr.lower() and "no-such-study" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_no_verify(fixture_study, tmp_path):
    out = tmp_path / "nv.zip"
    proc = run_cli("compress", str(fixture_study), "-o", str(out), "--lossless", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    record, names = outputs(out)
    assert len(names) == FIXTURE_FILES
    assert record["settings"]["verify"] is False
    assert record["verification"]["enabled"] is False
    compressed = [f for f in record["files"] if f["action"] == "compressed"]
    assert len(compressed) == FIXTURE_IMAGES
    assert all(f["verification"] == {"status": "skipped"} for f in compressed)
    assert "verified:" not in proc.stdout


def test_default_output_name_is_the_folder_name(fixture_study, tmp_path):
    proc = run_cli("compress", str(fixture_study), "--lossless", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record, names = outputs(tmp_path / f"{fixture_study.name}.zip")
    assert len(names) == FIXTURE_FILES and record["status"] == "succeeded"


def test_empty_folder_exits_non_zero(tmp_path):
    study = tmp_path / "empty-study"
    study.mkdir()
    out = tmp_path / "out" / "e.zip"
    proc = run_cli("compress", str(study), "-o", str(out))
    assert proc.returncode != 0
    assert "EmptyStudy" in proc.stdout
    assert not out.exists()
    assert json.loads((tmp_path / "out" / "e.result.json").read_text())["status"] == "failed"


def test_compress_with_report_writes_it_next_to_the_zip(fixture_study, tmp_path):
    out = tmp_path / "out" / "study.zip"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "compress", str(fixture_study), "-o", str(out), "--report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = out.with_name("study.report.html")
    assert report.exists() and report.stat().st_size > 10_000
    record = json.loads(out.with_suffix(".result.json").read_text())
    assert record["output"]["report"] == str(report)
    assert f"quality report: {report}" in proc.stdout
    assert any(line.startswith("quality floor 40 dB range-PSNR") for line in proc.stdout.splitlines())
