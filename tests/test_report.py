"""The visual quality report (pipeline/report): real runs of the CLI on the corpus, their records
(with the quality floor's fields added where a test needs them), the report built from them.

What a person relies on: each folder's worst and median image really are those by range-PSNR;
the pixels shown are the source's and the ZIP's (as pydicom decodes them), through the file's
window, MONOCHROME1 inverted; the page needs nothing from outside, holds no header value, and
stays small and cheap whatever the study.
"""

from __future__ import annotations

import io
import json
import math
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
from tests.helpers.studies import phi_values
from tests.helpers.png import read_png
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian
from tests.helpers.paths import ROOT
from tests.helpers.report import compress, pngs

from pipeline.report import Limits, build_report, report_name, report_path
from pipeline.report.burned_in import burned_in_risk
from pipeline.report.charts import nice_ticks
from pipeline.report.frames import archive_frame, frame_from_bytes, frame_from_stream
from pipeline.report.images import difference, difference_gain, display, shrink, shrink_difference, view_for
from pipeline.report.png import encode_png
from pipeline.report.series import series_of
from pipeline.study.source import LocalStudySource

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
        out[folder] = {label: unescape(path) for label, path in re.findall(r'<b>([^<]+)</b>: <span class="path">([^<]+)</span>', body)}
    return out


# --------------------------------------------------------------------------- PNG, windowing, shrinking


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64, 3), (5, 300, 3)])
def test_png_round_trips_through_an_independent_reader(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    noisy = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = (np.indices(shape[:2]).sum(axis=0) % 256).astype(np.uint8)
    smooth = np.repeat(smooth[..., None], 3, axis=2) if len(shape) == 3 else smooth
    for pixels in (noisy, smooth):  # noise keeps filter None, a ramp picks Sub/Up/Paeth
        assert np.array_equal(read_png(encode_png(pixels)), pixels)
    if smooth.size > 100:
        assert len(encode_png(smooth)) < len(encode_png(noisy))


def test_png_refuses_what_it_cannot_write() -> None:
    for bad in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError):
            encode_png(bad)


def _ct_header(**extra: Any) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for k, v in extra.items():
        setattr(ds, k, v)
    return ds


def test_the_file_s_first_window_applies_to_rescaled_values() -> None:
    ds = _ct_header(WindowCenter=[40, 300], WindowWidth=[80, 1500])
    stored = np.array([[1024 - 100, 1024 + 0, 1024 + 40, 1024 + 79, 1024 + 500]], dtype=np.int16)  # HU -100, 0, 40, 79, 500
    view = view_for(ds, 0, stored)
    assert (view.window_from, view.center, view.width) == ("file", 40, 80)
    grey = display(stored, view)
    assert grey[0, 0] == 0 and grey[0, -1] == 255
    assert abs(int(grey[0, 2]) - 128) <= 2  # the centre is mid-grey
    assert grey[0, 1] < grey[0, 2] < grey[0, 3]
    assert "window from the file" in view.describe() and "40" not in view.describe()  # where, never the values


def test_monochrome1_is_shown_inverted_and_a_window_comes_from_the_data_when_absent() -> None:
    stored = np.arange(0, 1000, dtype=np.uint16).reshape(10, 100)
    mono2 = view_for(_ct_header(RescaleIntercept=0), 0, stored)
    mono1 = view_for(_ct_header(RescaleIntercept=0, PhotometricInterpretation="MONOCHROME1"), 0, stored)
    assert mono2.window_from == mono1.window_from == "data" and mono1.invert and not mono2.invert
    assert np.array_equal(display(stored, mono1), 255 - display(stored, mono2))
    grey = display(stored, mono2)
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and 100 < grey[5, 0] < 160  # 1st-99th percentile stretched


def test_enhanced_objects_take_their_window_from_the_functional_groups(corpus: Path) -> None:
    path = corpus / "multiframe/enhanced-mr-siemens-xa-3frame.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "WindowCenter" not in ds
    frame = frame_from_bytes(path.read_bytes())
    assert view_for(frame.header, frame.index, frame.pixels).window_from == "file"


def test_the_difference_is_amplified_by_the_power_of_two_that_shows_it() -> None:
    view = view_for(_ct_header(WindowCenter=40, WindowWidth=400), 0, np.zeros((2, 2), np.int16))
    small = np.full((8, 8), 2.0)  # 2 HU in a 400 HU window: x64 is 82 grey levels
    big = np.full((8, 8), 300.0)  # 3/4 of the window: x1, saturating nothing
    assert difference_gain(small, view) == 64 and difference_gain(big, view) == 1
    assert difference(big, view, 1)[0, 0] == round(300 / 400 * 255)
    assert difference(small * 0, view, 64).max() == 0  # black is no error


def test_shrinking_keeps_means_and_a_single_pixel_error() -> None:
    frame = np.arange(512 * 512, dtype=np.int32).reshape(512, 512) % 1000
    assert np.allclose(shrink(frame, 2), frame.reshape(256, 2, 256, 2).mean(axis=(1, 3)))
    odd = np.ones((301, 203, 3), np.uint16)
    assert shrink(odd, 2).shape == (150, 101, 3)
    other = frame.copy()
    other[300, 301] += 7
    error = shrink_difference(frame, other, 4)
    assert error.shape == (128, 128) and error[75, 75] == 7 and error.sum() == 7


# --------------------------------------------------------------------------- frames, as pydicom decodes them


#: Corpus files the pipeline re-encodes, one per way of storing pixels that the report reads.
STORED_KINDS = [
    "multiframe/emri_small.dcm",  # native multi-frame
    "edge-cases/transfer-syntax/image_dfl.dcm",  # deflated
    "edge-cases/transfer-syntax/MR_small_RLE.dcm",  # RLE
    "edge-cases/transfer-syntax/emri_small_jpeg_2k_lossless.dcm",  # J2K multi-frame
    "edge-cases/transfer-syntax/JPEG-LL.dcm",  # JPEG lossless
    "edge-cases/photometric-bitdepth/dx_image.dcm",  # MONOCHROME1
    "edge-cases/photometric-bitdepth/SC_rgb_16bit.dcm",  # RGB 16-bit
]


@pytest.mark.parametrize("name", STORED_KINDS)
def test_a_frame_read_alone_is_pixel_array_s(corpus: Path, name: str) -> None:
    path = corpus / name
    count = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    expected = pixel_array(pydicom.dcmread(path), index=count // 2)
    with open(path, "rb") as fh:
        streamed = frame_from_stream(fh)
    whole = frame_from_bytes(path.read_bytes())
    assert streamed.index == whole.index == count // 2 and streamed.count == count
    assert np.array_equal(streamed.pixels, expected) and np.array_equal(whole.pixels, expected)


def test_ybr_full_is_shown_as_rgb_by_either_route() -> None:
    from pydicom.pixels import convert_color_space

    rgb = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.3.4"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 40, 48, 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    expected = pixel_array(ds)  # YBR_FULL -> RGB
    assert np.abs(expected.astype(int) - rgb).max() <= 3
    buffer.seek(0)
    assert np.array_equal(frame_from_stream(buffer).pixels, expected)
    assert np.array_equal(frame_from_bytes(buffer.getvalue()).pixels, expected)


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


def test_images_that_may_show_text_are_recognised(corpus: Path) -> None:
    def risk(name: str) -> str | None:
        return burned_in_risk(pydicom.dcmread(corpus / name, stop_before_pixels=True))

    assert risk("ct-series/philips-ingenuity-phantom-study/S21610/S4010/I40")  # a dose screen that says NO
    assert risk("edge-cases/photometric-bitdepth/examples_rgb_color.dcm")  # ultrasound
    assert risk("ct-series/ge-hispeed-head-tilt/01.dcm") is None
    assert risk("multiframe/emri_small.dcm") is None
    assert burned_in_risk(_ct_header(BurnedInAnnotation="YES"))


# --------------------------------------------------------------------------- series and picks


def test_series_are_folders_and_picks_go_by_range_psnr(fixture_study: Path, tmp_path: Path) -> None:
    record = compress(fixture_study, tmp_path / "fixture.zip")
    assert [s.folder for s in series_of(record)] == ["CT1", "CT2"]  # report/ holds only a kept SR
    by_path = {f["path"]: f for f in record["files"]}
    # PSNR and range-PSNR disagree on purpose: the worst by PSNR is not the worst by range-PSNR.
    by_psnr = sorted((f for f in record["files"] if f["path"].startswith("CT2/")), key=lambda f: f["verification"]["psnrDb"])
    for rank, f in enumerate(reversed(by_psnr)):
        f["verification"]["rangePsnrDb"] = 30.0 + rank
    ct2 = series_of(record)[1]
    assert ct2.worst is not None and ct2.worst.path == by_psnr[-1]["path"]  # the best by PSNR, the worst by range
    assert ct2.median.path == sorted(ct2.images, key=lambda i: i.range_psnr)[len(ct2.images) // 2].path
    html = _text(build_report(record, LocalStudySource(fixture_study), tmp_path / "fixture.zip"))
    picks = _picks(html)
    assert picks["CT2"] == {"worst": ct2.worst.path, "median": ct2.median.path}
    assert picks["CT1"]["worst"] == min((p for p in by_path if p.startswith("CT1/")), key=lambda p: by_path[p]["verification"]["psnrDb"])
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
                s3.put_object(Bucket="data", Key=f"incoming/c/study/{p.relative_to(fixture_study).as_posix()}", Body=p.read_bytes())
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
    for original, compressed in zip(images[::2], images[1::2]):
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


def test_the_corpus_report_shows_every_folder_s_worst_and_median(corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
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


def test_the_corpus_report_lists_the_floor_s_decisions_and_the_kept_files(corpus_run: tuple[Path, dict[str, Any], bytes]) -> None:
    _, record, html_bytes = corpus_run
    html = unescape(_text(html_bytes))
    reencoded = [f for f in record["files"] if (f.get("floor") or {}).get("action") == "reencoded"]
    assert 10 < len(reencoded) == record["totals"]["floorInterventions"]
    floor_section = html.split("<h2>Quality floor</h2>")[1].split("<h2>")[0]
    for f in reencoded:
        assert f["path"] in floor_section and f["floor"]["detail"] in floor_section
    assert f"{len(reencoded)} re-encoded" in floor_section and f"<summary>{len(reencoded)} decisions</summary>" in floor_section
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
    file's dataset (plus e2e_helpers.phi_values' UIDs: the report, unlike the record, lists
    none), dates and times too; values that are part of a study path are not looked for."""
    _, _, html_bytes = corpus_run
    keywords = {"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "PatientAddress",
                "ReferringPhysicianName", "InstitutionName", "InstitutionAddress", "AccessionNumber", "StudyID",
                "PerformingPhysicianName", "OperatorsName", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                "StudyTime", "DeviceSerialNumber"}
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
        return {v for v in values if (re.search(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])", text) if v.isdigit() or "." in v
                                      else v.lower() in lower)}

    html = _text(html_bytes)
    assert leaks(html.replace("</main>", "<p>doe^peter 19800707</p></main>")) == {"Doe^Peter", "19800707"}  # the check can fail
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
    peaks = {name: _report_peak_mb(src, z) for name, src, z in (("big", study, zip_path), ("small", ROOT / "fixtures/studies/ct-nested-001", small))}
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
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(study), str(zip_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1]) / 1024


# --------------------------------------------------------------------------- small parts


def test_report_names_follow_the_zip() -> None:
    assert report_name("compressed/clinic-1/study.zip") == "compressed/clinic-1/study.report.html"
    assert report_name("out/x.ZIP") == "out/x.report.html"
    assert report_path(Path("/tmp/out/study.zip")) == Path("/tmp/out/study.report.html")


def test_chart_ticks_cover_the_data() -> None:
    for low, high in ((0, 50.4), (27.3, 31.2), (16.7, 86.0), (45.0, 45.0), (0, 0.3)):
        ticks = nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and 2 <= len(ticks) <= 12, (low, high, ticks)
        assert all(math.isclose(b - a, ticks[1] - ticks[0]) for a, b in zip(ticks, ticks[1:]))
