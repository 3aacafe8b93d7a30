"""Tests for pipeline.archive.zipstream.

Archives are checked by Python's zipfile, by parsing the records ourselves, and
by unzip / bsdtar / 7-Zip when installed. The >4 GiB cases never hold gigabytes:
one streams a repeated zero chunk into a sink that keeps only head and tail, the
other passes a read-only anonymous mapping (backed by the kernel's zero page) and
turns it into a hole in a sparse file.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import shutil
import struct
import subprocess
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.archive import (
    UnsafeEntryName,
    ZipEntryInfo,
    ZipStreamWriter,
    ZipSummary,
    check_entry_name,
)

U16, U32, MIB = 0xFFFF, 0xFFFFFFFF, 1 << 20
LOCAL = struct.Struct("<IHHHHHIIIHH")
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<IHHHHIIH")
LOCATOR = struct.Struct("<IIQI")
EOCD64 = struct.Struct("<IQHHIIQQQQ")
UNZIP, BSDTAR = shutil.which("unzip"), shutil.which("bsdtar")
SEVENZIP = shutil.which("7z") or shutil.which("7zz") or shutil.which("7za")


class WriteOnlySink:
    """Only write(): a seek, tell or read by the writer is an AttributeError."""

    __slots__ = ("calls", "data")

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def write(self, b: bytes) -> int:
        self.data += b
        self.calls += 1
        return len(b)


class NoneSink(WriteOnlySink):
    """Like an upload part buffer whose write() returns None."""

    __slots__ = ()

    def write(self, b: bytes) -> None:  # type: ignore[override]
        super().write(b)


class HeadTailSink:
    """Counts and hashes everything, keeps only the first and last 64 KiB."""

    __slots__ = ("head", "sha", "size", "tail")
    KEEP = 64 * 1024

    def __init__(self) -> None:
        self.size, self.sha = 0, hashlib.sha256()
        self.head, self.tail = bytearray(), bytearray()

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        self.size += len(b)
        if len(self.head) < self.KEEP:
            self.head += b[: self.KEEP - len(self.head)]
        self.tail += b[-self.KEEP :]
        del self.tail[: -self.KEEP]
        return len(b)


class SparseFileSink:
    """Write-only view of a file; the one known all-zero buffer becomes a hole."""

    __slots__ = ("_f", "_hole")

    def __init__(self, f, hole: object) -> None:
        self._f, self._hole = f, hole

    def write(self, b: bytes) -> int:
        if b is self._hole:
            self._f.seek(len(b), os.SEEK_CUR)  # the test's file, not the writer's sink
            return len(b)
        return self._f.write(b)


def build(sink: object) -> ZipSummary:
    with ZipStreamWriter(sink) as w:  # type: ignore[arg-type]
        w.add_bytes("study/series 1/IM 0001.dcm", b"DICM" * 500, deflate=True)
        w.add_bytes("study/évaluation/résumé.txt", "ça marche".encode())
        w.add_stream("study/volume.raw", (bytes([i]) * 10_000 for i in range(50)))
        w.add_bytes("empty", b"")
    return w.close()


def read_zip(sink: WriteOnlySink) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(bytes(sink.data)))


def pseudo_random(n: int) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(n // 32 + 1))[:n]


def extras(blob: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos < len(blob):
        tag, size = struct.unpack_from("<HH", blob, pos)
        out[tag] = bytes(blob[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def parse_tail(tail: bytes, total: int) -> dict:
    """Parse EOCD, optional ZIP64 locator/record and the central directory from
    the last bytes of an archive of ``total`` bytes."""
    base = total - len(tail)
    eocd = EOCD.unpack_from(tail, len(tail) - EOCD.size)
    assert eocd[0] == 0x06054B50
    out: dict = {"eocd": eocd, "locator": None, "eocd64": None}
    cd_size, cd_offset = eocd[5], eocd[6]
    loc_at = len(tail) - EOCD.size - LOCATOR.size
    if struct.unpack_from("<I", tail, loc_at)[0] == 0x07064B50:
        out["locator"] = loc = LOCATOR.unpack_from(tail, loc_at)
        assert loc[3] == 1 and loc[1] == 0
        assert loc[2] == total - EOCD.size - LOCATOR.size - EOCD64.size
        out["eocd64"] = e64 = EOCD64.unpack_from(tail, loc[2] - base)
        assert e64[0] == 0x06064B50 and e64[1] == 44 and e64[3] == 45
        cd_size, cd_offset = e64[8], e64[9]
    out["cd_offset"], out["cd_size"] = cd_offset, cd_size
    cd, entries, pos = tail[cd_offset - base : cd_offset - base + cd_size], [], 0
    while pos < len(cd):
        f = CENTRAL.unpack_from(cd, pos)
        assert f[0] == 0x02014B50
        name_end = pos + CENTRAL.size + f[10]
        entries.append(
            {
                "made_by": f[1],
                "version": f[2],
                "flags": f[3],
                "method": f[4],
                "crc": f[7],
                "csize": f[8],
                "usize": f[9],
                "attr": f[15],
                "offset": f[16],
                "name": bytes(cd[pos + CENTRAL.size : name_end]).decode(),
                "extra": extras(cd[name_end : name_end + f[11]]),
            }
        )
        pos = name_end + f[11] + f[12]
    out["entries"] = entries
    return out


def local_header(buf: bytes, at: int) -> dict:
    f = LOCAL.unpack_from(buf, at)
    assert f[0] == 0x04034B50
    end = at + LOCAL.size + f[9]
    return {
        "version": f[1],
        "flags": f[2],
        "method": f[3],
        "time": f[4],
        "date": f[5],
        "crc": f[6],
        "csize": f[7],
        "usize": f[8],
        "name": bytes(buf[at + LOCAL.size : end]),
        "extra": extras(buf[end : end + f[10]]),
        "data_at": end + f[10],
    }


# --- round trips ---------------------------------------------------------------------


def test_add_bytes_roundtrip_stored_deflated_and_names() -> None:
    sink = WriteOnlySink()
    compressible, incompressible = b"pixel data " * 1000, pseudo_random(5000)
    with ZipStreamWriter(sink) as w:
        infos = [
            w.add_bytes("a.txt", b"hello"),
            w.add_bytes("dir/packed.bin", compressible, deflate=True),
            w.add_bytes("dir/noise.bin", incompressible, deflate=True),
            w.add_bytes("Ünïcødé/名前.dcm", b"utf8"),
            w.add_bytes("name with spaces.txt", b"spaces"),
            w.add_bytes("empty.txt", b"", deflate=True),
        ]
    expected = [b"hello", compressible, incompressible, b"utf8", b"spaces", b""]
    assert [i.method for i in infos] == ["stored", "deflated", "stored", "stored", "stored", "stored"]
    assert infos[1].compressed_size < len(compressible)
    zf = read_zip(sink)
    assert zf.testzip() is None
    assert zf.namelist() == [i.name for i in infos]
    for info, zi, data in zip(infos, zf.infolist(), expected, strict=True):
        assert zf.read(zi) == data
        assert (zi.header_offset, zi.CRC, zi.compress_size, zi.file_size) == (
            info.offset,
            info.crc32,
            info.compressed_size,
            info.file_size,
        )
        assert zi.compress_type == (zipfile.ZIP_DEFLATED if info.method == "deflated" else zipfile.ZIP_STORED)
        assert zi.flag_bits == (0x800 if zi.filename == "Ünïcødé/名前.dcm" else 0)
        assert zi.date_time == (1980, 1, 1, 0, 0, 0)
        assert (zi.create_system, zi.create_version, zi.extract_version) == (3, 20, 20)
        assert zi.external_attr == 0o100644 << 16
        assert zi.extra == b""
        assert local_header(sink.data, zi.header_offset)["extra"] == {}


def test_add_stream_roundtrip_data_descriptor_and_zip64_local_extra() -> None:
    sink = WriteOnlySink()
    parts = [b"", b"abc" * 1000, b"", pseudo_random(70_000), b"x"]
    with ZipStreamWriter(sink) as w:
        s1 = w.add_stream("stream/one.bin", iter(parts))
        b1 = w.add_bytes("between.txt", b"between")
        s2 = w.add_stream("stream/empty é.bin", iter([]))
    zf = read_zip(sink)
    assert zf.testzip() is None
    assert zf.namelist() == ["stream/one.bin", "between.txt", "stream/empty é.bin"]
    assert zf.read("stream/one.bin") == b"".join(parts)
    assert zf.read("stream/empty é.bin") == b""
    for info, flags in ((s1, 0x08), (s2, 0x808)):
        zi = zf.getinfo(info.name)
        assert info.method == "deflated" and zi.compress_type == zipfile.ZIP_DEFLATED
        assert zi.flag_bits == flags and zi.extract_version == 45
        assert zi.extra == b""  # nothing overflowed, so no ZIP64 extra in the central directory
        lh = local_header(sink.data, info.offset)
        assert (lh["flags"], lh["version"], lh["crc"], lh["csize"], lh["usize"]) == (flags, 45, 0, 0, 0)
        assert lh["extra"] == {1: struct.pack("<QQ", 0, 0)}
        end = lh["data_at"] + info.compressed_size
        assert struct.unpack_from("<IIQQ", sink.data, end) == (
            0x08074B50,
            info.crc32,
            info.compressed_size,
            info.file_size,
        )
    assert s1.crc32 == zlib.crc32(b"".join(parts)) and s1.file_size == 73_001
    assert zf.getinfo("between.txt").flag_bits == 0 and b1.offset == zf.getinfo("between.txt").header_offset


def test_small_archive_has_no_zip64_records() -> None:
    sink = WriteOnlySink()
    summary = build(sink)
    tail = parse_tail(bytes(sink.data), len(sink.data))
    assert summary.zip64 is False and tail["locator"] is None
    assert all(e["extra"] == {} for e in tail["entries"])
    assert [e["version"] for e in tail["entries"]] == [20, 20, 45, 20]
    assert [e["made_by"] for e in tail["entries"]] == [0x314, 0x314, 0x32D, 0x314]
    assert tail["eocd"][3:5] == (4, 4)


def test_add_stream_refuses_stored() -> None:
    sink = WriteOnlySink()
    w = ZipStreamWriter(sink)
    with pytest.raises(ValueError, match="deflate"):
        w.add_stream("a.bin", iter([b"x"]), deflate=False)
    assert w.bytes_written == 0 and sink.calls == 0
    w.add_stream("a.bin", iter([b"x"]))  # the name was not used up
    w.close()
    assert read_zip(sink).read("a.bin") == b"x"


# --- determinism, hashing, sink contract -----------------------------------------------


def test_deterministic_bytes_and_sha256() -> None:
    a, b = WriteOnlySink(), NoneSink()
    sa, sb = build(a), build(b)
    assert bytes(a.data) == bytes(b.data)
    assert sa == sb
    assert sa.sha256 == hashlib.sha256(a.data).hexdigest()
    assert sa.size == len(a.data) and sa.entries == 4
    other = WriteOnlySink()
    with ZipStreamWriter(other) as w:  # same entries, other order: other bytes
        w.add_bytes("study/évaluation/résumé.txt", "ça marche".encode())
        w.add_bytes("study/series 1/IM 0001.dcm", b"DICM" * 500, deflate=True)
    assert hashlib.sha256(other.data).hexdigest() == w.close().sha256 != sa.sha256


def test_sink_only_written_and_bytes_written_tracks_it() -> None:
    sink = WriteOnlySink()
    assert not any(hasattr(sink, attr) for attr in ("seek", "tell", "flush", "read"))
    w = ZipStreamWriter(sink)
    w.add_bytes("a", b"1")
    assert w.bytes_written == len(sink.data) == 30 + 1 + 1
    w.add_stream("b", [b"2" * 10])
    assert w.bytes_written == len(sink.data)
    assert w.close().size == w.bytes_written == len(sink.data)


def test_short_write_is_an_error() -> None:
    class Short:
        def write(self, b: bytes) -> int:
            return len(b) - 1

    w = ZipStreamWriter(Short())
    with pytest.raises(OSError, match="short write"):
        w.add_bytes("a", b"data")
    with pytest.raises(RuntimeError):
        w.add_bytes("b", b"data")


def test_close_is_idempotent_and_closed_writer_refuses_entries() -> None:
    sink = WriteOnlySink()
    w = ZipStreamWriter(sink)
    w.add_bytes("a", b"1")
    first = w.close()
    size = len(sink.data)
    assert w.close() is first and len(sink.data) == size
    with pytest.raises(RuntimeError, match="closed"):
        w.add_bytes("b", b"2")
    empty = WriteOnlySink()
    summary = ZipStreamWriter(empty).close()
    assert summary.entries == 0 and read_zip(empty).namelist() == []


def test_exception_in_with_block_writes_no_central_directory() -> None:
    sink = WriteOnlySink()
    with pytest.raises(KeyError):
        with ZipStreamWriter(sink) as w:
            w.add_bytes("a", b"1")
            raise KeyError("upstream failure")
    assert b"PK\x05\x06" not in sink.data and b"PK\x01\x02" not in sink.data
    with pytest.raises(RuntimeError, match="incomplete"):
        w.close()


def test_failing_chunk_source_leaves_writer_unusable() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"part"
        raise OSError("S3 read failed")

    w = ZipStreamWriter(WriteOnlySink())
    with pytest.raises(OSError, match="S3"):
        w.add_stream("a", chunks())
    for call in (lambda: w.add_bytes("b", b""), w.close):
        with pytest.raises(RuntimeError, match="incomplete"):
            call()


def test_add_stream_memory_does_not_grow_with_entry_size() -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(64):  # 64 MiB in fresh 1 MiB chunks
            yield bytes([i]) * MIB

    sink = HeadTailSink()
    w = ZipStreamWriter(sink)
    tracemalloc.start()
    try:
        info = w.add_stream("big", chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.file_size == 64 * MIB
    assert peak < 6 * MIB, peak


# --- entry names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "/",
        "a\\b",
        "..\\x",
        "C:",
        "c:/windows/x",
        "C:x",
        "a:b",
        ".",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        "a/..",
        "./a",
        "a//b",
        "a/",
        "dir/",
        "a\x00b",
        "a\nb",
        "tab\t",
        "\x1f",
        "del\x7f",
        "\ud800",
        "a" * 65_536,
        "é" * 32_768,
    ],
)
def test_unsafe_names_rejected(name: str) -> None:
    with pytest.raises(UnsafeEntryName):
        check_entry_name(name)
    sink = WriteOnlySink()
    w = ZipStreamWriter(sink)
    with pytest.raises(UnsafeEntryName):
        w.add_bytes(name, b"x")
    with pytest.raises(UnsafeEntryName):
        w.add_stream(name, [b"x"])
    assert sink.calls == 0


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a/b/c.dcm",
        "name with spaces",
        "..a",
        "a..",
        ".hidden/x",
        "Ünï/名前",
        "a" * 65_535,
        "é" * 32_767,
    ],
)
def test_safe_names_returned_unchanged(name: str) -> None:
    assert check_entry_name(name) == name


def test_non_str_name_rejected() -> None:
    with pytest.raises(UnsafeEntryName):
        check_entry_name(b"a")  # type: ignore[arg-type]


def test_duplicate_names_rejected() -> None:
    sink = WriteOnlySink()
    w = ZipStreamWriter(sink)
    w.add_bytes("a/b", b"1")
    w.add_stream("s", [b"2"])
    before = len(sink.data)
    for add in (lambda n: w.add_bytes(n, b"x"), lambda n: w.add_stream(n, [b"x"])):
        for name in ("a/b", "s"):
            with pytest.raises(UnsafeEntryName, match="duplicate"):
                add(name)
    assert len(sink.data) == before
    w.add_bytes("A/b", b"3")  # exact match only: the writer never rewrites or folds names
    w.close()
    assert read_zip(sink).namelist() == ["a/b", "s", "A/b"]


# --- third-party readers --------------------------------------------------------------


@pytest.fixture()
def archive_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.zip"
    with path.open("wb") as f:
        build(SparseFileSink(f, hole=None))
    return path


@pytest.mark.skipif(UNZIP is None, reason="unzip not installed (apt-get install -y unzip)")
def test_unzip_t(archive_file: Path) -> None:
    res = subprocess.run([UNZIP, "-t", str(archive_file)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors detected" in res.stdout


@pytest.mark.skipif(BSDTAR is None, reason="bsdtar not installed")
def test_bsdtar_seekable_and_streaming(archive_file: Path) -> None:
    listed = subprocess.run([BSDTAR, "-tf", str(archive_file)], capture_output=True, check=True)
    assert listed.stdout.decode().splitlines() == [
        "study/series 1/IM 0001.dcm",
        "study/évaluation/résumé.txt",
        "study/volume.raw",
        "empty",
    ]
    # Reading stdin forces libarchive's streaming reader: local headers + descriptors only.
    streamed = subprocess.run([BSDTAR, "-xOf", "-"], input=archive_file.read_bytes(), capture_output=True, check=True)
    assert streamed.stdout == (b"DICM" * 500 + "ça marche".encode() + b"".join(bytes([i]) * 10_000 for i in range(50)))


def test_7zip_t(archive_file: Path) -> None:
    if SEVENZIP is None:
        pytest.fail("7-Zip not found: `make tools` installs Debian's 7zip")
    res = subprocess.run([SEVENZIP, "t", str(archive_file)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Everything is Ok" in res.stdout and "Warning" not in res.stdout


# --- ZIP64 --------------------------------------------------------------------------------


@pytest.mark.parametrize("count,zip64", [(65_534, False), (65_535, True)])
def test_entry_count_boundary(count: int, zip64: bool) -> None:
    sink = HeadTailSink()
    w = ZipStreamWriter(sink)
    for i in range(count):
        w.add_bytes(f"{i}", b"")
    assert w.close().zip64 is zip64
    # 65,535 itself is the marker value, so it needs the ZIP64 record.
    tail = bytes(sink.tail)
    assert EOCD.unpack_from(tail, len(tail) - EOCD.size)[3] == (U16 if zip64 else count)
    assert (struct.unpack_from("<I", tail, len(tail) - 42)[0] == 0x07064B50) is zip64


def test_zip64_by_entry_count(tmp_path: Path) -> None:
    n = 70_000
    sink = WriteOnlySink()
    w = ZipStreamWriter(sink)
    for i in range(n):
        w.add_bytes(f"f/{i:05d}", str(i).encode())
    summary = w.close()
    data = bytes(sink.data)
    assert summary == ZipSummary(len(data), hashlib.sha256(data).hexdigest(), n, True)
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    assert len(names) == n and names[0] == "f/00000" and names[-1] == f"f/{n - 1:05d}"
    assert zf.read("f/69999") == b"69999" and zf.read("f/12345") == b"12345"
    tail = parse_tail(data, len(data))
    _, disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = tail["eocd"]
    assert (disk, cd_disk, on_disk, total) == (0, 0, U16, U16)
    assert (cd_size, cd_offset) == (tail["cd_size"], tail["cd_offset"])  # these fit: real values
    assert tail["eocd64"][6:8] == (n, n)
    assert len(tail["entries"]) == n and all(e["extra"] == {} for e in tail["entries"])
    if UNZIP:
        path = tmp_path / "many.zip"
        path.write_bytes(data)
        res = subprocess.run([UNZIP, "-tqq", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr


def test_zip64_stream_over_4gib_without_holding_it() -> None:
    chunk, count = bytes(MIB), 4097  # 4,296,015,872 bytes > 0xFFFFFFFF
    size = count * MIB
    sink = HeadTailSink()
    w = ZipStreamWriter(sink)
    info = w.add_stream("volume.raw", (chunk for _ in range(count)))
    summary = w.close()
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    assert (info.file_size, info.crc32, info.offset) == (size, crc, 0)
    assert info.compressed_size < U32
    assert summary.size == sink.size == w.bytes_written
    assert summary.sha256 == sink.sha.hexdigest() and summary.zip64 and summary.entries == 1

    lh = local_header(sink.head, 0)
    assert (lh["flags"], lh["version"], lh["csize"], lh["usize"]) == (0x08, 45, 0, 0)
    assert lh["extra"] == {1: bytes(16)}
    tail = parse_tail(bytes(sink.tail), sink.size)
    assert tail["cd_offset"] == lh["data_at"] + info.compressed_size + 24
    desc = bytes(sink.tail)[tail["cd_offset"] - 24 - (sink.size - len(sink.tail)) :][:24]
    assert struct.unpack("<IIQQ", desc) == (0x08074B50, crc, info.compressed_size, size)
    (entry,) = tail["entries"]
    assert (entry["version"], entry["flags"], entry["method"], entry["crc"]) == (45, 0x08, 8, crc)
    assert (entry["csize"], entry["usize"], entry["offset"]) == (info.compressed_size, U32, 0)
    assert entry["extra"] == {1: struct.pack("<Q", size)}  # only the field that overflowed
    assert tail["eocd"][3:7] == (1, 1, tail["cd_size"], tail["cd_offset"])
    assert tail["eocd64"][6:] == (1, 1, tail["cd_size"], tail["cd_offset"])


def write_sparse(path: Path, big: int) -> tuple[ZipSummary, list[ZipEntryInfo]]:
    """first.txt, ``big`` stored zero bytes (a hole on disk), then two entries
    whose local headers start beyond the first 4 GiB."""
    try:
        zeros = mmap.mmap(-1, big, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"cannot map {big} bytes: {exc}")
    view = memoryview(zeros)
    try:
        with path.open("wb") as f:
            w = ZipStreamWriter(SparseFileSink(f, hole=view))
            infos = [
                w.add_bytes("first.txt", b"first"),
                w.add_bytes("big.bin", view),
                w.add_bytes("after.txt", b"after " * 100, deflate=True),
                w.add_stream("after-stream.bin", [b"tail " * 50, b"end"]),
            ]
            summary = w.close()
    finally:
        view.release()
        zeros.close()
    assert summary.size == path.stat().st_size and summary.entries == 4
    zf = zipfile.ZipFile(path)
    assert zf.namelist() == [i.name for i in infos]
    assert zf.getinfo("big.bin").file_size == big
    assert [zf.getinfo(i.name).header_offset for i in infos] == [i.offset for i in infos]
    assert zf.read("first.txt") == b"first"
    assert zf.read("after.txt") == b"after " * 100  # zipfile checks the CRC too
    assert zf.read("after-stream.bin") == b"tail " * 50 + b"end"
    return summary, infos


def read_ends(path: Path) -> tuple[bytes, dict]:
    total = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4096)
        f.seek(total - 64 * 1024)
        return head, parse_tail(f.read(), total)


def test_zip64_entry_of_exactly_0xffffffff_bytes(tmp_path: Path) -> None:
    big, path = U32, tmp_path / "big.zip"  # the marker value itself must go to ZIP64 fields
    summary, (_, big_info, after, stream) = write_sparse(path, big)
    assert summary.zip64
    assert (big_info.offset, big_info.file_size, big_info.compressed_size) == (44, big, big)
    assert big_info.crc32 == 0 and big_info.method == "stored"  # CRC-32 of 2**32-1 zero bytes is 0
    assert after.offset == 44 + 30 + 7 + 20 + big and after.method == "deflated"
    assert stream.offset > U32

    head, tail = read_ends(path)
    lh = local_header(head, big_info.offset)
    assert (lh["version"], lh["csize"], lh["usize"]) == (45, U32, U32)
    assert lh["extra"] == {1: struct.pack("<QQ", big, big)}  # local ZIP64 extra: both sizes
    assert local_header(head, 0)["extra"] == {} and local_header(head, 0)["version"] == 20
    e = {x["name"]: x for x in tail["entries"]}
    assert list(e) == ["first.txt", "big.bin", "after.txt", "after-stream.bin"]
    assert (e["first.txt"]["version"], e["first.txt"]["extra"]) == (20, {})
    assert (e["big.bin"]["version"], e["big.bin"]["csize"], e["big.bin"]["usize"]) == (45, U32, U32)
    assert e["big.bin"]["extra"] == {1: struct.pack("<QQ", big, big)} and e["big.bin"]["offset"] == 44
    for name, info in (("after.txt", after), ("after-stream.bin", stream)):
        assert e[name]["version"] == 45 and e[name]["offset"] == U32
        assert e[name]["extra"] == {1: struct.pack("<Q", info.offset)}  # offset only
        assert (e[name]["csize"], e[name]["usize"]) == (info.compressed_size, info.file_size)
    assert tail["cd_offset"] > U32 and tail["eocd"][3:7] == (4, 4, tail["cd_size"], U32)
    assert tail["eocd64"][6:] == (4, 4, tail["cd_size"], tail["cd_offset"])
    # Not unzip 6.0 here: it keeps the last header's saturated size fields and so
    # misreads the next entry's offset-only ZIP64 extra when a size is exactly
    # 0xFFFFFFFF (see the offset-boundary test, where it reads all of these).
    if BSDTAR:
        out = subprocess.run(
            [BSDTAR, "-xOf", str(path), "after.txt", "after-stream.bin"], capture_output=True, check=True
        ).stdout
        assert out == b"after " * 100 + b"tail " * 50 + b"end"


def test_zip64_local_header_offset_of_exactly_0xffffffff(tmp_path: Path) -> None:
    big, path = U32 - 81, tmp_path / "offset.zip"  # puts after.txt's local header at 0xFFFFFFFF
    summary, (_, big_info, after, stream) = write_sparse(path, big)
    assert summary.zip64 and after.offset == U32 and stream.offset > U32
    assert big_info.crc32 == 0xF20059BB  # CRC-32 of 2**32-82 zero bytes

    head, tail = read_ends(path)
    lh = local_header(head, big_info.offset)
    assert (lh["version"], lh["csize"], lh["usize"], lh["extra"]) == (20, big, big, {})
    e = {x["name"]: x for x in tail["entries"]}
    assert (e["big.bin"]["version"], e["big.bin"]["usize"], e["big.bin"]["extra"]) == (20, big, {})
    assert e["after.txt"]["extra"] == {1: struct.pack("<Q", U32)}
    assert e["after-stream.bin"]["extra"] == {1: struct.pack("<Q", stream.offset)}
    assert tail["eocd"][3:7] == (4, 4, tail["cd_size"], U32)
    assert tail["eocd64"][6:] == (4, 4, tail["cd_size"], tail["cd_offset"])
    if UNZIP:  # a second ZIP64 reader, on the small members (no 4 GiB CRC pass)
        res = subprocess.run(
            [UNZIP, "-t", str(path), "first.txt", "after.txt", "after-stream.bin"], capture_output=True, text=True
        )
        assert res.returncode == 0 and "No errors detected" in res.stdout, res.stdout + res.stderr


def test_public_types() -> None:
    info = ZipEntryInfo("a", 0, 0, 0, 0, "stored")
    with pytest.raises(AttributeError):
        info.name = "b"  # type: ignore[misc]
    assert issubclass(UnsafeEntryName, ValueError)
