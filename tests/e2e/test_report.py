"""The visual quality report (pipeline/report): real runs of the CLI on the corpus, their records
(with the quality floor's fields added where a test needs them), the report built from them.

What a person relies on: each folder's worst and median image really are those by range-PSNR;
the pixels shown are the source's and the ZIP's (as pydicom decodes them), through the file's
window, MONOCHROME1 inverted; the page needs nothing from outside, holds no header value, and
stays small and cheap whatever the study. The report's parts on their own (PNG, windowing,
frames, chart ticks) are in tests/unit/test_report_parts.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from pipeline.report import Limits, build_report, report_path
from pipeline.report.frames import archive_frame
from pipeline.report.series import series_of
from pipeline.study.source import LocalStudySource
from tests.helpers.paths import ROOT
from tests.helpers.png import read_png
from tests.helpers.report import compress, pngs
from tests.helpers.studies import phi_values

#: The corpus's report must stay below this (measured: about 1.6 MB).
CORPUS_REPORT_MAX = 4_000_000


@pytest.fixture(scope="module")
def corpus_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], bytes]:
    """The whole corpus compressed at rate 100 with the default quality floor (the record holds
    the floor's real decisions), and its report."""
    zip_path = tmp_path_factory.mktemp("corpus") / "corpus.zip"
    record = compress(corpus, zip_path)
    html = build_report(record, LocalStudySource(corpus), zip_path)
    report_path(zip_path).write_bytes(html)
    return zip_path, record, html


def _text(html: bytes) -> str:
    return html.decode("utf-8")


def _picks(html: str) -> dict[str, dict[str, str]]:
    """folder -> {label: path} as the page shows them."""
    out: dict[str, dict[str, str]] = {}
    for section in re.findall(r'<section id="s\d+"><h3>(.*?)</h3>(.*?)</section>', html, re.S):
        folder, body = unescape(section[0]), section[1]
        out[folder] = {
            label: unescape(path)
            for label, path in re.findall(r'<b>([^<]+)</b>: <span class="path">([^<]+)</span>', body)
        }
    return out


def test_zip_entries_are_read_in_place_frame_by_frame(corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
    zip_path, record, _ = corpus_run
    name = "multiframe/emri_small.dcm"
    assert next(f for f in record["files"] if f["path"] == name)["frames"] == 10
    with zipfile.ZipFile(zip_path) as zf:
        data = zf.read(name)
        for index in (0, 4, 9):
            expected = pixel_array(io.BytesIO(data), index=index)
            assert np.array_equal(archive_frame(zf, name, index).pixels, expected)
    with zipfile.ZipFile(io.BytesIO(zip_path.read_bytes())) as zf:  # from a file object too
        assert np.array_equal(archive_frame(zf, name, 9).pixels, pixel_array(io.BytesIO(data), index=9))


# --------------------------------------------------------------------------- series and picks


def test_series_are_folders_and_picks_go_by_range_psnr(fixture_study: Path, tmp_path: Path) -> None:
    record = compress(fixture_study, tmp_path / "fixture.zip")
    assert [s.folder for s in series_of(record)] == ["CT1", "CT2"]  # report/ holds only a kept SR
    by_path = {f["path"]: f for f in record["files"]}
    # PSNR and range-PSNR disagree on purpose: the worst by PSNR is not the worst by range-PSNR.
    by_psnr = sorted(
        (f for f in record["files"] if f["path"].startswith("CT2/")), key=lambda f: f["verification"]["psnrDb"]
    )
    for rank, f in enumerate(reversed(by_psnr)):
        f["verification"]["rangePsnrDb"] = 30.0 + rank
    ct2 = series_of(record)[1]
    assert ct2.worst is not None and ct2.worst.path == by_psnr[-1]["path"]  # the best by PSNR, the worst by range
    assert ct2.median.path == sorted(ct2.images, key=lambda i: i.range_psnr)[len(ct2.images) // 2].path
    html = _text(build_report(record, LocalStudySource(fixture_study), tmp_path / "fixture.zip"))
    picks = _picks(html)
    assert picks["CT2"] == {"worst": ct2.worst.path, "median": ct2.median.path}
    assert picks["CT1"]["worst"] == min(
        (p for p in by_path if p.startswith("CT1/")), key=lambda p: by_path[p]["verification"]["psnrDb"]
    )
    assert "range-PSNR (dB)" in html.split('<section id="s1">')[1] and "PSNR (dB)" in html.split('<section id="s0">')[1]
    assert len(pngs(html)) == 2 * 3 + 2 * 3  # two folders, two picks, original/compressed/difference


def test_a_study_in_s3_gives_the_same_page_by_either_read_route(fixture_study: Path, tmp_path: Path) -> None:
    """S3StudySource (whole GETs, or header + frame by ranged GETs when every object counts as
    large) and a ZIP handed over as a file object: the same page, pixel for pixel, as from disk."""
    import boto3
    from moto import mock_aws

    from pipeline.study.s3source import S3StudySource

    zip_path = tmp_path / "fixture.zip"
    record = compress(fixture_study, zip_path)
    local = build_report(record, LocalStudySource(fixture_study), zip_path)
    streamed = json.loads(json.dumps(record))
    streamed["timings"]["memoryBudget"]["streamThresholdBytes"] = 1
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        for p in fixture_study.rglob("*"):
            if p.is_file():
                s3.put_object(
                    Bucket="data",
                    Key=f"incoming/c/study/{p.relative_to(fixture_study).as_posix()}",
                    Body=p.read_bytes(),
                )
        s3.put_object(Bucket="data", Key="incoming/c/study/_READY", Body=b"")
        source = S3StudySource(s3, "data", "incoming/c/study/")
        whole = build_report(record, source, io.BytesIO(zip_path.read_bytes()))
        ranged = build_report(streamed, source, io.BytesIO(zip_path.read_bytes()))
    assert len(pngs(_text(local))) == 12 and "not shown" not in _text(local)
    assert whole == local and ranged == local


def test_a_lossless_study_shows_identical_pixels(fixture_study: Path, tmp_path: Path) -> None:
    record = compress(fixture_study, tmp_path / "lossless.zip", "--lossless")
    html = _text(build_report(record, LocalStudySource(fixture_study), tmp_path / "lossless.zip"))
    assert html.count("no difference: identical pixels") == 4 and "bit-exact" in html
    images = [read_png(png) for png in pngs(html)]
    assert len(images) == 8 and all(i.std() > 10 for i in images)  # originals and compressed, no blank ones
    for original, compressed in zip(images[::2], images[1::2], strict=True):
        assert np.array_equal(original, compressed)


# --------------------------------------------------------------------------- the corpus's report


def test_the_corpus_report_is_self_contained_and_small(corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
    _, _, html_bytes = corpus_run
    html = _text(html_bytes)
    print(f"\ncorpus report: {len(html_bytes):,} bytes, {len(pngs(html))} images")
    assert len(html_bytes) <= CORPUS_REPORT_MAX
    assert "<script" not in html.lower() and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "url(" not in html and "@import" not in html
    assert "Content-Security-Policy\" content=\"default-src 'none'; img-src data:;" in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), {s[:40] for s in sources}
    for png in pngs(html):
        image = read_png(png)
        assert max(image.shape[:2]) <= Limits().thumbnail


def test_the_corpus_report_shows_every_folder_s_worst_and_median(
    corpus_run: tuple[Path, dict[str, Any], bytes],
) -> None:
    _, record, html_bytes = corpus_run
    html = _text(html_bytes)
    series = series_of(record)
    assert len(series) == 14
    picks = _picks(html)
    assert set(picks) == {s.folder for s in series}
    for s in series:
        measured = sorted((i for i in s.images if i.measure is not None), key=lambda i: i.measure)  # type: ignore[arg-type,return-value]
        shown = picks[s.folder]
        worst = shown.get("worst") or shown.get("the only image") or shown.get("worst and median")
        assert worst == measured[0].path, s.folder
        if "median" in shown:
            assert shown["median"] == measured[len(measured) // 2].path
    multiframe = html.split("<h3>multiframe</h3>")[1].split("</section>")[0]
    assert "frame 4 of 6" in multiframe or "frame 6 of 10" in multiframe or "frame 2 of 3" in multiframe
    assert "range-PSNR (dB)" in html and html.count("stroke-dasharray") == len(series)  # the floor on every chart
    # Dose screens and ultrasound are measured and listed, not drawn.
    assert "S4010/I40</span>" in html and "pixels not drawn: a secondary capture" in html


def test_the_corpus_report_lists_the_floor_s_decisions_and_the_kept_files(
    corpus_run: tuple[Path, dict[str, Any], bytes],
) -> None:
    _, record, html_bytes = corpus_run
    html = unescape(_text(html_bytes))
    reencoded = [f for f in record["files"] if (f.get("floor") or {}).get("action") == "reencoded"]
    assert 10 < len(reencoded) == record["totals"]["floorInterventions"]
    floor_section = html.split("<h2>Quality floor</h2>")[1].split("<h2>")[0]
    for f in reencoded:
        assert f["path"] in floor_section and f["floor"]["detail"] in floor_section
    assert (
        f"{len(reencoded)} re-encoded" in floor_section
        and f"<summary>{len(reencoded)} decisions</summary>" in floor_section
    )
    kept_section = html.split("<h2>Files kept as-is</h2>")[1]
    kept = [f for f in record["files"] if f["action"] == "kept"]
    assert len(kept) > 100
    for f in kept:
        assert f"{f['path']}</td>" in kept_section and f["reason"] in kept_section, f["path"]
    assert "Study warnings" in kept_section and "DICOMDIR" in kept_section
    totals = html.split("<h2>Study totals</h2>")[1].split("<h2>")[0]
    assert f"{record['totals']['files']}: {record['totals']['compressed']} compressed" in totals
    assert f"range-PSNR min {record['verification']['minRangePsnrDb']:.1f} dB" in totals


def test_no_header_value_in_the_corpus_report(corpus: Path, corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
    """As tests/reliability/test_phi.py checks the logs: identifying values at any depth of every
    file's dataset (plus tests.helpers.studies.phi_values' UIDs: the report, unlike the record, lists
    none), dates and times too; values that are part of a study path are not looked for."""
    _, _, html_bytes = corpus_run
    keywords = {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientAddress",
        "ReferringPhysicianName",
        "InstitutionName",
        "InstitutionAddress",
        "AccessionNumber",
        "StudyID",
        "PerformingPhysicianName",
        "OperatorsName",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "DeviceSerialNumber",
    }
    paths = "\n".join(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()).lower()
    values = set(phi_values(corpus))
    for p in corpus.rglob("*"):
        if not p.is_file():
            continue
        try:
            elements = list(pydicom.dcmread(p, stop_before_pixels=True, force=True).iterall())
        except Exception:  # noqa: BLE001, S112 - not DICOM
            continue
        for elem in elements:
            if elem.keyword in keywords and elem.value is not None:
                raw = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
                values |= {str(v).strip() for v in raw}
    values = {v for v in values if len(v) >= 4 and not set(v) <= set("^ 0.:") and v.lower() not in paths}
    assert len(values) > 100 and {"Citizen^Jan", "Doe^Peter", "19800707"} <= values

    def leaks(html: str) -> set[str]:
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", " ", unescape(html))  # the pixels are not text
        lower = text.lower()
        return {
            v
            for v in values
            if (
                re.search(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])", text)
                if v.isdigit() or "." in v
                else v.lower() in lower
            )
        }

    html = _text(html_bytes)
    assert leaks(html.replace("</main>", "<p>doe^peter 19800707</p></main>")) == {
        "Doe^Peter",
        "19800707",
    }  # the check can fail
    assert leaks(html) == set()


# --------------------------------------------------------------------------- bounds


def test_limits_bound_the_page_whatever_the_study(corpus: Path, corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
    """Thousands of folders and files: detailed series, images and table rows stop at the limits."""
    zip_path, record, _ = corpus_run
    big = json.loads(json.dumps(record))
    compressed = [f for f in record["files"] if f["action"] == "compressed"]
    kept = [f for f in record["files"] if f["action"] == "kept"]
    good = [f for f in compressed if f["path"].startswith("edge-cases/transfer-syntax/")][:3]
    big["files"] = [{**f, "path": f"folder{i:04d}/{f['path'].rsplit('/', 1)[-1]}"} for i in range(2000) for f in good]
    big["files"] += [{**f, "path": f"kept/{i}/{f['path']}"} for i in range(20) for f in kept]
    real = [f for f in compressed if f["path"].startswith("ct-series/ge-hispeed")]  # these resolve to images
    big["files"] += real
    limits = Limits(series=40, image_bytes=150_000, rows=300, chart_points=100)
    html_bytes = build_report(big, LocalStudySource(corpus), zip_path, limits=limits)
    html = _text(html_bytes)
    assert len(html_bytes) < 1_500_000, len(html_bytes)
    assert html.count("<section ") == 40
    assert sum(len(m) for m in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html)) <= 150_000
    assert "\u2026 and 1,701 more series" in html and "more files (all are in the result record)" in html
    assert "no longer in the study" in html  # the made-up folders: listed, measured, no pixels
    # A tiny image budget: the worst series keep their captions, lose their images.
    starved = _text(build_report(record, LocalStudySource(corpus), zip_path, limits=Limits(image_bytes=1)))
    assert not pngs(starved) and "images left out to keep the report small" in starved


def test_a_1_gb_object_costs_a_frame_or_two(corpus: Path, tmp_path: Path) -> None:
    """The report of one 2,000-frame 1 GB object, built in a fresh process, peaks no higher than
    the report of a 10-file study (the object's middle frame is all it decodes)."""
    from bench.objects import build_multiframe

    study = build_multiframe(tmp_path / "big" / "vol.dcm", corpus, frames=2000).parent
    zip_path = tmp_path / "out" / "big.zip"
    record = compress(study, zip_path, "--codec", "htj2k")  # HTJ2K for the test's time; the report reads any
    (f,) = record["files"]
    assert f["action"] == "compressed" and f["frames"] == 2000 and f["bytesIn"] > 1_000_000_000

    small = tmp_path / "small.zip"
    compress(ROOT / "fixtures/studies/ct-nested-001", small)
    peaks = {
        name: _report_peak_mb(src, z)
        for name, src, z in (("big", study, zip_path), ("small", ROOT / "fixtures/studies/ct-nested-001", small))
    }
    print(f"\nreport peak RSS: 1 GB 2,000-frame object {peaks['big']:.0f} MB, 10-file study {peaks['small']:.0f} MB")
    assert peaks["big"] <= peaks["small"] + 16, peaks  # a 512 KiB frame and its thumbnails, not the object
    assert "frame 1001 of 2000" in report_path(zip_path).read_text()


_CHILD = """
import json, resource, sys
from pipeline.report import build_report, report_path
from pipeline.study.source import LocalStudySource
src, zip_path = sys.argv[1], sys.argv[2]
record = json.load(open(zip_path[:-4] + ".result.json"))
report_path(zip_path).write_bytes(build_report(record, LocalStudySource(src), zip_path))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _report_peak_mb(study: Path, zip_path: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(study), str(zip_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1]) / 1024
