"""Large objects as header + frames: bounded reads, every encoder, the same bytes as reading whole.

A small memory budget turns ordinary corpus files into "large" ones, so the streamed path is
checked against the whole-file path on real images of every kind (multi-frame, deflated,
losslessly compressed); built multi-frame objects check the bounds.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import zipfile
from pathlib import Path

import boto3
import numpy as np
import pydicom
import pytest
from moto import mock_aws
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

import pipeline.files.assemble as assemble_module
from bench.objects import build_deflate_bomb, build_multiframe
from pipeline.budget import MIB, MemoryBudget
from pipeline.config import CompressionSettings
from pipeline.engine import Study, compress_study
from pipeline.files.process import process_file
from pipeline.study.s3source import S3StudySource
from pipeline.study.source import LocalStudySource, SourceError

LOSSY, LOSSLESS = CompressionSettings(), CompressionSettings(mode="lossless")
TINY = MemoryBudget.for_host(2, in_flight=1 * MIB)  # stream threshold 256 KiB: most images stream
ROOMY = MemoryBudget.for_host(2, in_flight=128 * MIB)
# Real images of every kind the streamed path must handle like the whole-file path.
KINDS = [
    "multiframe/emri_small.dcm",
    "multiframe/6_1.dcm",
    "multiframe/enhanced-mr-siemens-xa-3frame.dcm",
    "edge-cases/transfer-syntax/image_dfl.dcm",
    "edge-cases/transfer-syntax/emri_small_jpeg_2k_lossless.dcm",
    "edge-cases/transfer-syntax/JPEG-LL.dcm",
    "edge-cases/transfer-syntax/dcm_qa_ts/7.dcm",
    "edge-cases/transfer-syntax/MR_small_RLE.dcm",
    "edge-cases/transfer-syntax/SC_rgb_rle_16bit.dcm",
    "edge-cases/transfer-syntax/OBXXXX1A_rle.dcm",
    "ct-series/ge-hispeed-head-tilt/01.dcm",
    "multiframe/examples_ybr_color.dcm",
    "multiframe/liver.dcm",
    "mr-series/hitachi-anatomical-4/001.dcm",
]


class _Recording(LocalStudySource):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.whole: list[str] = []
        self.opened: list[str] = []

    def read(self, obj):  # type: ignore[no-untyped-def]
        self.whole.append(obj.path)
        return super().read(obj)

    def open(self, obj):  # type: ignore[no-untyped-def]
        self.opened.append(obj.path)
        return super().open(obj)


def _run(root: Path, settings: CompressionSettings, budget: MemoryBudget, workers: int = 2, source=None):
    source = source or LocalStudySource(root)
    buf = io.BytesIO()
    run = compress_study(Study.from_source(source), buf, settings, encoders=workers, budget=budget)
    return run, buf.getvalue()


@pytest.fixture(scope="module")
def kinds(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinds")
    for rel in KINDS:
        shutil.copy(corpus / rel, root / rel.replace("/", "_"))
    return root


@pytest.mark.parametrize("settings", [LOSSY, LOSSLESS], ids=["lossy", "lossless"])
def test_streamed_objects_give_the_bytes_of_whole_files(kinds: Path, settings: CompressionSettings) -> None:
    source = _Recording(kinds)
    streamed_run, streamed = _run(kinds, settings, TINY, source=source)
    whole_run, whole = _run(kinds, settings, ROOMY)
    big = {p.name for p in kinds.iterdir() if p.stat().st_size > TINY.stream_threshold}
    assert big and not set(source.whole) & big, "objects over the threshold must never be read whole"
    assert big <= set(source.opened)
    assert streamed == whole
    assert [o.to_record() for o in streamed_run.outcomes] == [o.to_record() for o in whole_run.outcomes]
    assert any(o.streamed and o.frames and o.frames > 1 for o in streamed_run.outcomes)
    # and the same as the encoder's own whole-file path, file by file
    with zipfile.ZipFile(io.BytesIO(streamed)) as zf:
        for path in sorted(kinds.iterdir()):
            data = path.read_bytes()
            assert zf.read(path.name) == (process_file(path.name, data, settings).data or data), path.name


def test_lossless_compressed_inputs_are_reencoded_bit_exact(kinds: Path) -> None:
    run, data = _run(kinds, LOSSY, TINY)
    by_path = {o.path: o for o in run.outcomes}
    for name in (
        "edge-cases_transfer-syntax_JPEG-LL.dcm",
        "edge-cases_transfer-syntax_dcm_qa_ts_7.dcm",
        "edge-cases_transfer-syntax_MR_small_RLE.dcm",
        "edge-cases_transfer-syntax_emri_small_jpeg_2k_lossless.dcm",
    ):
        assert by_path[name].action == "compressed", by_path[name].reason
        assert by_path[name].transfer_syntax_out == "1.2.840.10008.1.2.4.91"
    run, data = _run(kinds, LOSSLESS, TINY)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for o in run.outcomes:
            if o.action != "compressed" or o.transfer_syntax_in in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
                continue
            source = pixel_array(pydicom.dcmread(kinds / o.path), as_rgb=False)
            out = pydicom.dcmread(io.BytesIO(zf.read(o.path)))
            assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
            assert np.array_equal(pixel_array(out, as_rgb=False), source), o.path
    kept = {o.path: o.reason for o in run.outcomes if o.action == "kept"}
    assert "already in the asked transfer syntax" in kept["edge-cases_transfer-syntax_emri_small_jpeg_2k_lossless.dcm"]
    assert "second generation of loss" in kept["multiframe_examples_ybr_color.dcm"]


@pytest.fixture(scope="module")
def volume(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("volume")
    build_multiframe(root / "vol.dcm", corpus, frames=48)
    return root


def test_a_multiframe_volume_is_split_across_encoders_and_bit_exact(volume: Path) -> None:
    budget = MemoryBudget.for_host(2, in_flight=4 * MIB)
    run, data = _run(volume, LOSSLESS, budget)
    (outcome,) = run.outcomes
    assert outcome.action == "compressed" and outcome.streamed and outcome.frames == 48
    src = pydicom.dcmread(volume / "vol.dcm")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        out = pydicom.dcmread(io.BytesIO(zf.read("vol.dcm")))
    assert np.array_equal(pixel_array(out), pixel_array(src))
    # a Basic Offset Table with one offset per frame, as PS3.5 A.4 lays it out
    bot_len = struct.unpack_from("<I", out.PixelData, 4)[0]
    assert bot_len == 4 * 48


def test_extended_offset_table_when_offsets_exceed_32_bits(volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assemble_module, "_MAX_BOT", 1000)  # as if the frames passed 4 GiB
    _, data = _run(volume, LOSSY, MemoryBudget.for_host(2, in_flight=4 * MIB))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        out = pydicom.dcmread(io.BytesIO(zf.read("vol.dcm")))
    assert struct.unpack_from("<I", out.PixelData, 4)[0] == 0, "the BOT must be empty with an EOT"
    offsets = struct.unpack(f"<{48}Q", out.ExtendedOffsetTable)
    lengths = struct.unpack(f"<{48}Q", out.ExtendedOffsetTableLengths)
    frames = list(
        generate_frames(
            out.PixelData,
            number_of_frames=48,
            extended_offsets=(out.ExtendedOffsetTable, out.ExtendedOffsetTableLengths),
        )
    )
    assert len(frames) == 48 and offsets[0] == 0 and all(len(f) <= n for f, n in zip(frames, lengths, strict=True))
    assert pixel_array(out).shape == (48, 512, 512)


def test_spool_goes_to_a_temporary_file_that_leaves_nothing(
    volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool_dir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    budget = MemoryBudget(in_flight=4 * MIB, stream_threshold=256 * 1024, spool_memory=64 * 1024, memory=1 << 30)
    run, data = _run(volume, LOSSLESS, budget)
    assert run.spooled_bytes > 1 * MIB
    assert list(spool_dir.iterdir()) == []
    _, whole = _run(volume, LOSSLESS, ROOMY)
    assert data == whole


def _corrupt(volume: Path, dest: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    dest.mkdir()
    data = bytearray((volume / "vol.dcm").read_bytes())
    (dest / "bad.dcm").write_bytes(edit(data))
    return dest


@pytest.mark.parametrize("case", ["more-frames-than-data", "truncated-pixels"])
def test_bad_native_objects_are_kept_with_a_clear_reason(volume: Path, tmp_path: Path, case: str) -> None:
    def more_frames(data: bytearray) -> bytes:
        return bytes(data).replace(b"IS\x02\x0048", b"IS\x02\x0096", 1)

    def truncated(data: bytearray) -> bytes:
        return bytes(data[: len(data) - 300_000])

    root = _corrupt(volume, tmp_path / case, more_frames if case.startswith("more") else truncated)
    run, data = _run(root, LOSSLESS, MemoryBudget.for_host(2, in_flight=4 * MIB))
    (o,) = run.outcomes
    assert o.action == "kept" and o.warning, o.reason
    assert "Pixel Data" in (o.reason or ""), o.reason
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("bad.dcm") == (root / "bad.dcm").read_bytes()


def test_deflate_bomb_is_inflated_as_a_stream(corpus: Path, tmp_path: Path) -> None:
    bomb = build_deflate_bomb(tmp_path / "bomb" / "bomb.dcm", corpus, frames=200)  # 100 MiB inflated
    assert bomb.stat().st_size < 200_000
    run, _ = _run(bomb.parent, LOSSLESS, ROOMY)
    (o,) = run.outcomes
    assert o.action == "compressed" and o.streamed and o.frames == 200
    assert o.pixel_bytes_in == 200 * 512 * 512 * 2


@pytest.mark.parametrize("case", ["ends-early", "corrupt"])
def test_broken_deflate_streams_are_kept(corpus: Path, tmp_path: Path, case: str) -> None:
    bomb = build_deflate_bomb(tmp_path / "src" / "bomb.dcm", corpus, frames=20)
    data = bomb.read_bytes()
    if case == "ends-early":
        data = data[: len(data) // 2]
    else:
        data = data[:2000] + bytes(b ^ 0x5A for b in data[2000:2400]) + data[2400:]
    root = tmp_path / case
    root.mkdir()
    (root / "bomb.dcm").write_bytes(data)
    run, zdata = _run(root, LOSSLESS, ROOMY)
    (o,) = run.outcomes
    assert o.action == "kept" and o.warning and o.reason, o
    with zipfile.ZipFile(io.BytesIO(zdata)) as zf:
        assert zf.read("bomb.dcm") == data


def test_large_kept_objects_are_stored_without_compression_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.engine as engine

    monkeypatch.setattr(engine, "LARGE_KEPT", 1 * MIB)
    root = tmp_path / "kept"
    root.mkdir()
    blob = os.urandom(1024) * 3 * 1024  # 3 MiB, very compressible, not DICOM
    (root / "notes.bin").write_bytes(blob)
    _, data = _run(root, LOSSLESS, MemoryBudget.for_host(2, in_flight=1 * MIB))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("notes.bin")
        assert zf.read("notes.bin") == blob
    assert info.compress_size >= info.file_size, "stored blocks: no compression work"


def test_s3_objects_are_read_by_ranges_and_give_the_local_bytes(volume: Path) -> None:
    budget = MemoryBudget.for_host(2, in_flight=4 * MIB)
    _, local = _run(volume, LOSSY, budget)
    data = (volume / "vol.dcm").read_bytes()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="study-bucket")
        s3.put_object(Bucket="study-bucket", Key="incoming/c/s/vol.dcm", Body=data)
        ranges: list[str] = []
        s3.meta.events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: ranges.append(params.get("Range", ""))
        )
        source = S3StudySource(
            s3, "study-bucket", "incoming/c/s/", checksums={"vol.dcm": hashlib.sha256(data).hexdigest()}
        )
        _, remote = _run(volume, LOSSY, budget, source=source)
        assert remote == local
        assert ranges and all(r.startswith("bytes=") for r in ranges)
        assert len(ranges) >= len(data) // (4 * MIB)
        bad = S3StudySource(s3, "study-bucket", "incoming/c/s/", checksums={"vol.dcm": "0" * 64})
        with pytest.raises(SourceError, match="sha256"):
            _run(volume, LOSSY, budget, source=bad)


def test_an_encoder_dying_on_a_frame_keeps_the_object_and_the_study_goes_on(
    volume: Path, fixture_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.files.encoders as W

    root = tmp_path / "study"
    shutil.copytree(fixture_study, root)
    shutil.copy(volume / "vol.dcm", root / "vol.dcm")
    real = W.encode_frame

    def crash_on_frame_7(index, data, layout, codec, **options):  # type: ignore[no-untyped-def]
        if index == 7 and layout.rows == 512 and len(data) == 512 * 512 * 2 and os.environ.get("CRASH_FRAME") == "1":
            os._exit(3)  # what a segfault in the native encoder looks like to the parent
        return real(index, data, layout, codec, **options)

    monkeypatch.setattr(W, "encode_frame", crash_on_frame_7)  # inherited by the forked workers
    monkeypatch.setenv("CRASH_FRAME", "1")
    budget = MemoryBudget.for_host(2, in_flight=8 * MIB)  # CT slices whole, the volume streamed
    run, data = _run(root, LOSSLESS, budget)
    by_path = {o.path: o for o in run.outcomes}
    vol = by_path["vol.dcm"]
    assert (
        vol.action == "kept" and vol.warning and "frame 8 of 48" in (vol.reason or "") and "died" in (vol.reason or "")
    )
    assert sum(o.action == "compressed" for o in run.outcomes) == 10  # the fixture's CT slices
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("vol.dcm") == (volume / "vol.dcm").read_bytes()


def test_work_in_flight_is_bounded_in_bytes(corpus: Path) -> None:
    """However many tasks are queued, those read and not yet handed out stay under the budget
    (plus the one that crossed it)."""
    import pipeline.files.encoders as W
    from pipeline.files.stream import FileTask
    from pipeline.study.listing import StudyObject

    data = (corpus / "ct-series/ge-hispeed-head-tilt/01.dcm").read_bytes()
    pulled, emitted, peak = [0], [0], [0]

    def tasks():  # type: ignore[no-untyped-def]
        for i in range(30):
            pulled[0] += 1
            peak[0] = max(peak[0], (pulled[0] - emitted[0]) * len(data))
            yield FileTask(StudyObject(f"{i}.dcm", len(data)), data)

    budget = 3 * len(data) // 2  # room for one and a half files
    for _ in W.process_items(tasks(), LOSSLESS, encoders=2, budget_bytes=budget):
        emitted[0] += 1
    assert emitted[0] == 30
    assert peak[0] <= budget + len(data)


def test_gdcm_decodes_a_streamed_volume_bit_exact(volume: Path, tmp_path: Path) -> None:
    """An independent decoder (Debian's GDCM, not the pipeline's openjpeg) reads every frame."""
    import subprocess

    if shutil.which("gdcmconv") is None:
        pytest.fail("gdcmconv not found: install Debian's libgdcm-tools (`make tools`)")
    _, data = _run(volume, LOSSLESS, MemoryBudget.for_host(2, in_flight=4 * MIB))
    enc, raw = tmp_path / "enc.dcm", tmp_path / "raw.dcm"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        enc.write_bytes(zf.read("vol.dcm"))
    subprocess.run(["gdcmconv", "--raw", str(enc), str(raw)], check=True, capture_output=True)
    assert pydicom.dcmread(raw).PixelData == pydicom.dcmread(volume / "vol.dcm").PixelData


def test_the_time_guard_learns_a_deflated_objects_real_size(corpus: Path, tmp_path: Path) -> None:
    """A 200 KB file that inflates to 100 MB of pixel data: the estimate made from file sizes let
    it start; its header revises it, and the study fails at once, cleanly, with the reason."""
    from pipeline.job.deadline import pixel_guard
    from pipeline.job.errors import StudyFailed

    bomb = build_deflate_bomb(tmp_path / "bomb" / "bomb.dcm", corpus, frames=200)
    guard = pixel_guard(lambda: 40_000, 1)  # 40 s left
    assert guard is not None
    with pytest.raises(StudyFailed, match=r"bomb\.dcm holds 104,857,600 bytes of pixel data"):
        compress_study(
            Study.from_source(LocalStudySource(bomb.parent)),
            io.BytesIO(),
            LOSSLESS,
            encoders=1,
            budget=ROOMY,
            on_pixels=guard,
        )
    roomy = pixel_guard(lambda: 900_000, 1)
    run = compress_study(
        Study.from_source(LocalStudySource(bomb.parent)),
        io.BytesIO(),
        LOSSLESS,
        encoders=1,
        budget=ROOMY,
        on_pixels=roomy,
    )
    assert run.outcomes[0].action == "compressed"
