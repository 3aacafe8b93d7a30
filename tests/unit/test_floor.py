"""The quality floor on real images: every lossy output at or above it when decoded independently.

Range-PSNR = 20 log10((max - min of the source image) / RMSE) over all frames of an object,
computed here from pydicom's own decode (pylibjpeg) of the written file, not from the pipeline's
measurements.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from pipeline.budget import MIB, MemoryBudget
from pipeline.config import CompressionSettings
from pipeline.engine import Study, compress_study
from pipeline.files.process import process_file
from pipeline.notify.eventbridge import event_detail
from pipeline.outputs.record import build_record, summary_lines
from pipeline.study.source import LocalStudySource

FLOOR = CompressionSettings()  # rate 100, floor 40 dB: the defaults
OFF = CompressionSettings(min_psnr=0)


def range_psnr(source: np.ndarray, decoded: np.ndarray) -> float:
    diff = source.astype(np.float64) - decoded.astype(np.float64)
    rmse = math.sqrt(float(np.mean(diff * diff)))
    return math.inf if rmse == 0 else 20 * math.log10(max(float(source.max()) - float(source.min()), 1) / rmse)


def _selection(corpus: Path, manifest: list[dict[str, str]]) -> list[Path]:
    """The categories the issue measured: the small MR series, multi-frame objects, CT of both
    scanners, secondary captures / colour / angiography (transfer-syntax and photometric edge cases)."""
    rows = [r for r in manifest if r["dicom"] == "yes" and r["has_pixel_data"] == "yes"]
    mr = [r for r in rows if r["category"] == "mr-series"][::4]
    ct = [r for r in rows if r["category"] == "ct-series"][::15]
    other = [
        r
        for r in rows
        if r["category"] in ("multiframe", "edge-cases/photometric-bitdepth", "edge-cases/transfer-syntax")
    ]
    return [corpus / r["file"] for r in mr + ct + other]


@pytest.fixture(scope="module")
def floored(corpus: Path, manifest: list[dict[str, str]]) -> list[tuple[Path, bytes, object]]:
    return [(p, p.read_bytes(), process_file(p.name, p.read_bytes(), FLOOR)) for p in _selection(corpus, manifest)]


def test_every_lossy_output_meets_the_floor_when_decoded_independently(floored) -> None:
    checked = reencoded = 0
    for path, data, o in floored:
        if o.action != "compressed":
            continue
        out = pydicom.dcmread(io.BytesIO(o.data))
        source = pixel_array(pydicom.dcmread(io.BytesIO(data)), as_rgb=False)
        decoded = pixel_array(out, as_rgb=False)
        got = range_psnr(source, decoded)
        assert got >= 40.0, f"{path.name}: {got:.2f} dB < 40 ({o.floor})"
        assert o.verification.get("rangePsnrDb") is None or abs(o.verification["rangePsnrDb"] - got) < 0.02, (
            path.name,
            got,
        )
        checked += 1
        reencoded += o.floor["action"] != "met"
        if o.floor["action"] == "lossless":
            assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90" and np.array_equal(source, decoded)
        else:  # Lossy Image Compression Ratio holds the ratio actually achieved
            assert float(
                out.LossyImageCompressionRatio[-1]
                if out["LossyImageCompressionRatio"].VM > 1
                else out.LossyImageCompressionRatio
            ) == pytest.approx(o.pixel_ratio, abs=0.01)
    assert checked > 60 and reencoded > 20, (checked, reencoded)


def test_floor_decisions_are_recorded_in_words(floored) -> None:
    touched = [o for _, _, o in floored if o.floor and o.floor["action"] == "reencoded"]
    assert touched
    for o in touched:
        detail = o.floor["detail"]
        assert detail.startswith("rate 100 gave ") and "dB < 40" in detail and "re-encoded at" in detail, detail
        assert f"{o.pixel_ratio:.1f}:1" in detail, detail


def test_mr_slices_destroyed_at_rate_100_are_saved_by_the_floor(corpus: Path, manifest) -> None:
    row = next(r for r in manifest if r["category"] == "mr-series" and r["rows"] == "64")
    data = (corpus / row["file"]).read_bytes()
    off = process_file("mr.dcm", data, OFF)
    on = process_file("mr.dcm", data, FLOOR)
    source = pixel_array(pydicom.dcmread(io.BytesIO(data)), as_rgb=False)
    before = range_psnr(source, pixel_array(pydicom.dcmread(io.BytesIO(off.data)), as_rgb=False))
    after = range_psnr(source, pixel_array(pydicom.dcmread(io.BytesIO(on.data)), as_rgb=False))
    assert before < 25 <= 40 <= after, (before, after)
    assert off.floor is None and on.floor["action"] in ("reencoded", "lossless")


def test_floor_off_gives_the_bytes_and_uids_of_no_floor(corpus: Path, floored) -> None:
    # The settings' identity without a floor is the one the pipeline had before the floor
    # existed, so derived UIDs (and bytes) of a floor-0 run are those of that pipeline.
    before_floor = {"mode": "lossy", "codec": "j2k", "rate": 100.0}
    assert OFF.fingerprint() == hashlib.sha256(json.dumps(before_floor, sort_keys=True).encode()).hexdigest()[:16]
    assert FLOOR.fingerprint() != OFF.fingerprint()
    for path, data, o in floored:
        off = process_file(path.name, data, OFF)
        assert off.floor is None
        if o.action == "compressed" and o.floor["action"] == "met":
            # the floor left the codestreams alone: only the derived UID (settings) differs
            a, b = pydicom.dcmread(io.BytesIO(o.data)), pydicom.dcmread(io.BytesIO(off.data))
            assert a.PixelData == b.PixelData, path.name


def test_no_lossy_encoding_meeting_the_floor_means_lossless(corpus: Path) -> None:
    data = (corpus / "ct-series/ge-hispeed-head-tilt/01.dcm").read_bytes()
    o = process_file("ct.dcm", data, CompressionSettings(min_psnr=110))  # beyond any 9/7 encoding
    assert o.action == "compressed" and o.floor["action"] == "lossless", o.floor
    out = pydicom.dcmread(io.BytesIO(o.data))
    src = pydicom.dcmread(io.BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert out.SOPInstanceUID == src.SOPInstanceUID and "LossyImageCompression" not in out
    assert o.verification == {"status": "bit-exact"}
    assert np.array_equal(pixel_array(out), pixel_array(src))


def test_htj2k_follows_the_floor(floored) -> None:
    settings = CompressionSettings(codec="htj2k")
    checked = 0
    for path, data, _ in floored[:40]:
        o = process_file(path.name, data, settings)
        if o.action != "compressed":
            continue
        source = pixel_array(pydicom.dcmread(io.BytesIO(data)), as_rgb=False)
        decoded = pixel_array(pydicom.dcmread(io.BytesIO(o.data)), as_rgb=False)
        assert range_psnr(source, decoded) >= 40.0, (path.name, o.floor)
        checked += 1
    assert checked > 20


def test_the_floor_is_deterministic_and_frame_by_frame_on_streamed_objects(corpus: Path, tmp_path: Path) -> None:
    root = tmp_path / "study"
    root.mkdir()
    for rel in ("multiframe/emri_small.dcm", "multiframe/6_1.dcm", "multiframe/enhanced-mr-siemens-xa-3frame.dcm"):
        shutil.copy(corpus / rel, root / Path(rel).name)
    outs = []
    for in_flight in (1 * MIB, 1 * MIB, 128 * MIB):  # streamed twice, then read whole
        buf = io.BytesIO()
        run = compress_study(
            Study.from_source(LocalStudySource(root)),
            buf,
            FLOOR,
            encoders=2,
            budget=MemoryBudget.for_host(2, in_flight=in_flight),
        )
        outs.append(buf.getvalue())
    assert outs[0] == outs[1] == outs[2]
    assert sum(o.streamed for o in run.outcomes) == 0
    with zipfile.ZipFile(io.BytesIO(outs[0])) as zf:
        for o in run.outcomes:
            source = pixel_array(pydicom.dcmread(root / o.path), as_rgb=False)
            decoded = pixel_array(pydicom.dcmread(io.BytesIO(zf.read(o.path))), as_rgb=False)
            assert range_psnr(source, decoded) >= 40.0, o.path
    record = build_record(run, output={"path": "x.zip"})
    assert record["totals"]["floorInterventions"] == 3
    assert record["verification"]["minRangePsnrDb"] >= 40
    event = event_detail(
        record,
        study={"bucket": "b", "prefix": "p/", "marker": "_READY"},
        output={"bucket": "b", "zipKey": "k", "recordKey": "r"},
    )
    assert event["totals"]["floorInterventions"] == 3
    line = next(x for x in summary_lines(record) if x.startswith("quality floor"))
    assert "3 image(s) re-encoded" in line
