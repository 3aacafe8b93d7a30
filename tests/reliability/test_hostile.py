"""Hostile input: every object gets a clear per-file or per-study result, memory stays bounded.

Through the S3 pipeline (moto server + the real handler via ``poll_once``) unless said
otherwise: the 10,000-file study and the non-UTF-8 file name go through the local-folder API
(``python -m pipeline compress`` in a subprocess, which is also where peak memory is measured).
Studies are compressed lossless so that every re-encoded image can be compared exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import textwrap
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.archive import check_entry_name
from pipeline.aws import client
from tests.helpers.aws import (
    drop_pending,
    get_bytes,
    get_record,
    list_keys,
    open_uploads,
    queue_counts,
    run_until_idle,
)
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts
from tests.helpers.paths import ROOT
from tests.helpers.s3_faults import S3Faults, request_key
from tests.helpers.studies import SMALL_STUDY, ct_slices

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

VISIBILITY_TIMEOUT = 10
LOSSLESS = json.dumps({"mode": "lossless"}).encode()
MiB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def _handler() -> Any:
    from handlers.worker import handler

    return handler


def _submit(stack: Any, prefix: str, files: dict[str, bytes], manifest: bytes | None = LOSSLESS) -> None:
    s3 = client("s3")
    for rel, data in files.items():
        s3.put_object(Bucket=stack.bucket, Key=prefix + rel, Body=data)
    if manifest is None:
        s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
    else:
        s3.put_object(Bucket=stack.bucket, Key=prefix + "manifest.json", Body=manifest)


def _pixels(data: bytes) -> Any:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    return pixel_array(dcmread(io.BytesIO(data)), as_rgb=False)


def _zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = [i.filename for i in zf.infolist()]
        assert len(names) == len(set(names))
        return {name: zf.read(name) for name in names}


def _check_every_file(record: dict[str, Any], zip_bytes: bytes, sources: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Each source object has one row and one ZIP entry: kept byte-for-byte, or re-encoded and
    decoding to exactly the source's pixels. Returns the rows by path."""
    rows = {f["path"]: f for f in record["files"]}
    assert sorted(rows) == sorted(sources), "an object is missing from the record (or one was invented)"
    entries = _zip_entries(zip_bytes)
    assert list(entries) == [f.get("zipEntry", f["path"]) for f in record["files"]]  # record order = ZIP order
    for path, row in rows.items():
        entry = row.get("zipEntry", path)
        check_entry_name(entry)
        assert row.get("reason") or row["action"] == "compressed", row
        assert "died" not in (row.get("reason") or ""), f"the encoder crashed on {path!r}: {row['reason']}"
        if row["action"] == "kept":
            assert entries[entry] == sources[path], f"{path!r} kept but not byte-for-byte"
        else:
            assert row["verification"]["status"] == "bit-exact", row
            out, src = _pixels(entries[entry]), _pixels(sources[path])
            assert out.shape == src.shape and (out == src).all(), f"{path!r}: wrong image"
    return rows


def _outputs(stack: Any, study_path: str) -> tuple[dict[str, Any], bytes | None]:
    s3 = client("s3")
    record = get_record(s3, stack.bucket, f"compressed/{study_path}.result.json")
    assert record is not None, f"no record for {study_path}"
    return record, get_bytes(s3, stack.bucket, f"compressed/{study_path}.zip")


def _measured_run(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; it prints one JSON line (with its peak RSS) last."""
    wrapper = textwrap.dedent(script) + textwrap.dedent("""
        import resource as _r
        RESULT["peak_rss_mib"] = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024
        RESULT["children_peak_rss_mib"] = _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(RESULT))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def url_request(url: str) -> Any:
    """Enough of a request for :func:`request_key`."""
    from types import SimpleNamespace

    return SimpleNamespace(url=url)


def huge_header_dicom(corpus: Path) -> bytes:
    """A real CT slice whose header claims 65,535 x 65,535 pixels x 1,000 frames over 16 bytes of pixel data."""
    import pydicom

    ds = pydicom.dcmread(ct_slices(corpus)[0])
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.PixelData = bytes(range(16))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- names


def _long_name() -> str:
    """A nested path making a key of just over 1,000 bytes (S3's limit is 1,024)."""
    prefix = "incoming/hostile/names/"
    component = "L" + "o" * 244  # 245 bytes: still a legal file name on extraction
    path = "/".join([component] * 4) + "/long.dcm"
    assert 1000 < len((prefix + path).encode()) <= 1024
    return path


def test_hostile_names_and_empty_files(stack: Any, corpus: Path, tmp_path: Path, facts: Facts) -> None:
    mr = (corpus / SMALL_STUDY["MR1/IM1"]).read_bytes()
    ct = ct_slices(corpus)[1].read_bytes()
    sources = {
        "a/../b.dcm": ct,
        "../escape.dcm": mr,
        "./dot.dcm": mr,
        "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
        "//server/share/abs.dcm": mr,
        "C:\\Windows\\evil.dcm": mr,
        "..\\..\\up.dcm": b"backslash traversal",
        "C:relative.dcm": b"drive-relative",
        "ctl\x01\x1f\x7f.dcm": ct,
        "tab\tname.dcm": b"a tab",
        "../collide.txt": b"escapes to the same name as the next one",
        "%2E%2E/collide.txt": b"a literal percent name",
        "trailing/": b"a non-empty 'folder' object",
        "empty.dcm": b"",
        "CT/empty": b"",
        "Ünïcode/日本語.dcm": ct,
        _long_name(): ct,
    }
    sqs = client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    prefix = "incoming/hostile/names/"
    _submit(stack, prefix, sources)
    listed = {k[len(prefix) :] for k in list_keys(client("s3"), stack.bucket, prefix)}
    assert set(sources) <= listed, sorted(set(sources) - listed)  # S3 (moto) stored every hostile key as is
    run_until_idle(stack.queue_url, _handler())

    record, zip_bytes = _outputs(stack, "hostile/names")
    assert record["status"] in ("succeeded", "succeeded_with_warnings"), record.get("error")
    assert zip_bytes is not None
    rows = _check_every_file(record, zip_bytes, sources)
    facts.equal("hostile.names.objects", len(rows), len(sources))
    facts.setup("hostile.names.longest_key_bytes", len((prefix + _long_name()).encode()), unit="bytes")
    actions = Counter(row["action"] for row in rows.values())
    # The CT slices under hostile names are compressed; the 32x32 MR slices (too small) and the
    # rest are kept.
    facts.equal("hostile.names.compressed", actions["compressed"], 4)
    facts.equal("hostile.names.kept", actions["kept"], 13)
    # Names that could escape are escaped, and the record gives both names.
    for path in (
        "a/../b.dcm",
        "../escape.dcm",
        "./dot.dcm",
        "/etc/passwd",
        "//server/share/abs.dcm",
        "C:\\Windows\\evil.dcm",
        "..\\..\\up.dcm",
        "C:relative.dcm",
        "ctl\x01\x1f\x7f.dcm",
        "tab\tname.dcm",
        "../collide.txt",
        "trailing/",
    ):
        assert "zipEntry" in rows[path] and rows[path]["zipEntry"] != path, path
    assert rows["../collide.txt"]["zipEntry"] != rows["%2E%2E/collide.txt"].get("zipEntry", "%2E%2E/collide.txt")
    facts.equal("hostile.names.renamed_in_zip", sum(row.get("zipEntry", p) != p for p, row in rows.items()), 12)
    for path in ("empty.dcm", "CT/empty"):
        assert (rows[path]["action"], rows[path]["reason"], rows[path]["bytesOut"]) == ("kept", "empty file", 0)
    facts.equal("hostile.names.empty_kept", sum(row.get("reason") == "empty file" for row in rows.values()), 2)
    assert rows["Ünïcode/日本語.dcm"]["action"] == "compressed" and "zipEntry" not in rows["Ünïcode/日本語.dcm"]
    for path in (_long_name(), "a/../b.dcm", "ctl\x01\x1f\x7f.dcm"):
        assert rows[path]["action"] == "compressed", path
    assert rows["../escape.dcm"]["action"] == "kept" and "32x32" in rows["../escape.dcm"]["reason"]
    assert [e["detail-type"] for e in events.for_prefix(prefix)] == ["Study Compressed"]

    # Real extractors put every entry inside the target folder, under exactly its name.
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "study.zip").write_bytes(zip_bytes)
    entries = set(_zip_entries(zip_bytes))
    extractors = [["unzip", "-q", "study.zip", "-d", "out"], ["bsdtar", "-x", "-f", "study.zip", "-C", "out"]]
    ran = []
    for command in extractors:
        out = tmp_path / "x" / "out"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir()
        try:
            subprocess.run(command, cwd=tmp_path / "x", check=True, capture_output=True, timeout=120)
        except FileNotFoundError:
            continue  # `make test` installs both; without them zipfile's check above stands alone
        extracted = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert extracted == entries, (command[0], sorted(extracted ^ entries))
        assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["out", "study.zip"]
        assert not (tmp_path / "escape.dcm").exists() and not (tmp_path / "up.dcm").exists()
        ran.append(command[0])
    facts.setup("hostile.names.extractors", ran)  # the ones installed here (make tools installs both)


def test_non_utf8_local_file_name(corpus: Path, tmp_path: Path, facts: Facts) -> None:
    """Local folders can hold names that are not UTF-8 (old CDs, Latin-1 archives): percent-escaped."""
    root = tmp_path / "study"
    root.mkdir()
    (root / "ok.dcm").write_bytes(ct_slices(corpus)[0].read_bytes())
    with open(os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9.dcm"), "wb") as fh:
        fh.write(b"not dicom")
    out = tmp_path / "out.zip"
    result = _measured_run(
        """
        import json, sys
        from pipeline.cli import main
        RESULT = {"code": main(["compress", sys.argv[1], "-o", sys.argv[2], "--lossless", "--workers", "2"])}
    """,
        str(root),
        str(out),
    )
    record = json.loads(out.with_suffix(".result.json").read_text())
    assert result["code"] == 0 and record["status"] == "succeeded", record.get("error")
    assert [(f["path"], f["action"]) for f in record["files"]] == [
        ("latin1-%E9t%E9.dcm", "kept"),
        ("ok.dcm", "compressed"),
    ]
    assert _zip_entries(out.read_bytes())["latin1-%E9t%E9.dcm"] == b"not dicom"
    facts.equal("hostile.non_utf8.objects", record["totals"]["files"], 2)
    facts.equal("hostile.non_utf8.name", record["files"][0]["path"], "latin1-%E9t%E9.dcm")


# --------------------------------------------------------------------------- many files


def test_ten_thousand_tiny_files_local_folder_api(tmp_path: Path, facts: Facts) -> None:
    root = tmp_path / "study"
    root.mkdir()
    n = facts.setup("hostile.tiny.files", 10_000)
    for i in range(1, n + 1):
        (root / f"IM{i}").write_bytes(b"tiny %d\n" % i)
    out = tmp_path / "out.zip"
    result = _measured_run(
        """
        import json, sys
        from pipeline.cli import main
        RESULT = {"code": main(["compress", sys.argv[1], "-o", sys.argv[2], "--lossless", "--workers", "2"])}
    """,
        str(root),
        str(out),
    )
    assert result["code"] == 0
    record = json.loads(out.with_suffix(".result.json").read_text())
    assert record["status"] == "succeeded"
    facts.equal("hostile.tiny.objects", record["totals"]["files"], n)
    data = out.read_bytes()
    entries = _zip_entries(data)
    assert list(entries) == [f"IM{i}" for i in range(1, n + 1)]  # natural order: IM2 before IM10
    facts.equal("hostile.tiny.byte_identical", sum(entries[f"IM{i}"] == b"tiny %d\n" % i for i in range(1, n + 1)), n)
    # ZIP64 only when needed: 10,000 entries and < 4 GiB need none of its records.
    facts.equal("hostile.tiny.zip64_records", data[-200:].count(b"PK\x06\x06") + data[-200:].count(b"PK\x06\x07"), 0)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        facts.equal("hostile.tiny.extra_fields", sum(i.extra != b"" for i in zf.infolist()), 0)
    # Bounded: not proportional to the study.
    facts.bound("hostile.tiny.peak_rss_mib", round(result["peak_rss_mib"]), "<", 512, unit="MiB", varies=True)
    facts.bound(
        "hostile.tiny.encoders_peak_rss_mib", round(result["children_peak_rss_mib"]), "<", 512, unit="MiB", varies=True
    )
    print(
        f"\n10,000 files: peak RSS {result['peak_rss_mib']:.0f} MiB (encoders {result['children_peak_rss_mib']:.0f} MiB)"
    )


# --------------------------------------------------------------------------- broken DICOM


def test_header_claiming_65535x65535x1000_frames_is_kept_in_bounded_memory(
    corpus: Path, tmp_path: Path, facts: Facts
) -> None:
    data = huge_header_dicom(corpus)
    (tmp_path / "huge.dcm").write_bytes(data)
    result = _measured_run(
        """
        import json, resource, sys
        from pathlib import Path
        data = Path(sys.argv[1]).read_bytes()
        from pipeline.config import CompressionSettings
        from pipeline.files.process import process_file
        import pydicom, numpy  # imported before the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        outcomes = [process_file("huge.dcm", data, CompressionSettings(mode=m)) for m in ("lossless", "lossy")]
        RESULT = {"before_mib": before, "outcomes": [
            {"action": o.action, "reason": o.reason, "same": o.data == data, "warning": o.warning} for o in outcomes]}
    """,
        str(tmp_path / "huge.dcm"),
    )
    for outcome in result["outcomes"]:
        assert outcome["action"] == "kept" and outcome["same"] and outcome["warning"], outcome
    facts.equal(
        "hostile.huge.kept_byte_identical", sum(o["action"] == "kept" and o["same"] for o in result["outcomes"]), 2
    )
    [reason] = {o["reason"] for o in result["outcomes"]}  # the same in both modes
    facts.contains("hostile.huge.reason", reason, "pixel data")
    growth = result["peak_rss_mib"] - result["before_mib"]
    facts.bound("hostile.huge.rss_growth_mib", round(growth, 1), "<", 64, unit="MiB", varies=True)
    print(f"\nhuge header: kept ({result['outcomes'][0]['reason'][:80]}...), peak RSS +{growth:.1f} MiB")


def _corrupt_variants(corpus: Path) -> dict[str, bytes]:
    """The non-conformant corpus folder, a huge-header file, and truncations, byte flips and
    insertions of a real CT slice (seeded: the same variants on every run)."""
    out = {
        f"nonconformant/{p.name}": p.read_bytes() for p in sorted((corpus / "edge-cases" / "non-conformant").iterdir())
    }
    out["huge/claims-65535x65535x1000.dcm"] = huge_header_dicom(corpus)
    ct = ct_slices(corpus)[2].read_bytes()
    n = len(ct)
    for cut in (1, 100, 128, 131, 132, 133, 140, 200, 300, 340, 600, 1000, 1500, n // 4, n // 2, n - 2, n - 1):
        out[f"truncated/at-{cut}.dcm"] = ct[:cut]
    rng = random.Random(1234)
    for i in range(16):
        data = bytearray(ct)
        span = 2048 if i % 2 == 0 else n  # half of them hit the header
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(span)] ^= 1 << rng.randrange(8)
        out[f"flipped/{i}.dcm"] = bytes(data)
    for i in range(6):
        at = rng.randrange(2048 if i % 2 == 0 else n)
        out[f"inserted/{i}.dcm"] = ct[:at] + rng.randbytes(rng.randint(1, 16)) + ct[at:]
    return out


def test_truncated_and_corrupt_files_are_kept_or_verified(stack: Any, corpus: Path, facts: Facts) -> None:
    sources = _corrupt_variants(corpus)
    for kind in ("nonconformant", "huge", "truncated", "flipped", "inserted"):
        facts.setup(f"hostile.corrupt.{kind}", sum(p.startswith(kind + "/") for p in sources))
    sqs = client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    prefix = "incoming/hostile/corrupt/"
    _submit(stack, prefix, sources)
    run_until_idle(stack.queue_url, _handler())

    record, zip_bytes = _outputs(stack, "hostile/corrupt")
    assert record["status"] in ("succeeded", "succeeded_with_warnings"), record.get("error")
    assert zip_bytes is not None
    rows = _check_every_file(record, zip_bytes, sources)
    assert rows["huge/claims-65535x65535x1000.dcm"]["action"] == "kept"
    for path, row in rows.items():
        if path.startswith("truncated/") and row["action"] == "kept":
            assert row["reason"], path
    actions = {a: sum(r["action"] == a for r in rows.values()) for a in ("kept", "compressed")}
    print(f"\n{len(rows)} broken files: {actions}")
    facts.equal("hostile.corrupt.objects", len(rows), len(sources))
    # Seeded variants of fixed corpus files: the split is the pipeline's decision on each, the same
    # on every run. A change means it now decides differently on one: see which, and why.
    facts.equal("hostile.corrupt.compressed", actions["compressed"], 15)
    facts.equal("hostile.corrupt.kept", actions["kept"], 39)
    facts.equal("hostile.corrupt.status", record["status"], "succeeded_with_warnings")
    assert [e["detail-type"] for e in events.for_prefix(prefix)] == ["Study Compressed"]


# --------------------------------------------------------------------------- manifests


def test_oversized_and_deep_manifests_fail_with_the_reason(stack: Any, corpus: Path, facts: Facts) -> None:
    sqs = client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    one = {"CT/IM1": ct_slices(corpus)[0].read_bytes()}
    head = b'{"metadata": {"pad": "'
    big = head + b"x" * (50 * MiB - len(head) - 3) + b'"}}'
    assert len(big) == 50 * MiB and json.loads(big)
    deep = b'{"metadata": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    _submit(stack, "incoming/hostile/manifest-50mb/", one, manifest=big)
    _submit(stack, "incoming/hostile/manifest-deep/", one, manifest=deep)
    with S3Faults(client("s3"), ["GetObject"], lambda op, req: None) as seen:
        run_until_idle(stack.queue_url, _handler())

    for study, reason in (
        ("manifest-50mb", "manifest.json is 52,428,800 bytes; the limit is 1,048,576"),
        ("manifest-deep", "manifest.json is nested deeper than 32 levels"),
    ):
        record, zip_bytes = _outputs(stack, f"hostile/{study}")
        assert (record["status"], record["error"]["code"]) == ("failed", "InvalidManifest")
        facts.equal(f"hostile.{study}.message", record["error"]["message"], reason)
        assert zip_bytes is None
        [event] = events.for_prefix(f"incoming/hostile/{study}/")
        assert event["detail-type"] == "Study Compression Failed" and event["detail"]["error"] == record["error"]
        facts.equal(f"hostile.{study}.failure_events", len(events.for_prefix(f"incoming/hostile/{study}/")), 1)
        assert get_bytes(client("s3"), stack.bucket, f"compressed/hostile/{study}.zip.lock") is None
    # The 50 MB manifest is refused on its size: never downloaded.
    fetched = [request_key(url_request(url), stack.bucket) for _, url, _ in seen.log]
    facts.equal("hostile.manifest-50mb.gets", fetched.count("incoming/hostile/manifest-50mb/manifest.json"), 0)
    assert open_uploads(client("s3"), stack.bucket) == []
    assert "incoming/hostile/manifest-deep/manifest.json" in fetched
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []


OUTPUT_FILENAMES = {
    "dotdot-slash": "../x.zip",
    "absolute": "/x.zip",
    "subfolder": "a/b.zip",
    "dotdot": "..",
    "dotdot-backslash": "..\\x.zip",
    "nul": "x\x00.zip",
}


@pytest.mark.parametrize("name", list(OUTPUT_FILENAMES.values()), ids=list(OUTPUT_FILENAMES))
def test_output_filename_cannot_leave_the_target_prefix(
    stack: Any, corpus: Path, name: str, facts: Facts, request: pytest.FixtureRequest
) -> None:
    s3, sqs = client("s3"), client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    events.read()
    before = set(list_keys(s3, stack.bucket, ""))
    study = f"hostile/outname-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    prefix = f"incoming/{study}/"
    _submit(
        stack,
        prefix,
        {"CT/IM1": ct_slices(corpus)[0].read_bytes()},
        manifest=json.dumps({"outputFilename": name}).encode(),
    )
    run_until_idle(stack.queue_url, _handler())

    record, zip_bytes = _outputs(stack, study)
    assert (record["status"], record["error"]["code"]) == ("failed", "InvalidManifest"), record
    case = request.node.callspec.id
    facts.setup("hostile.outname.cases", list(OUTPUT_FILENAMES))
    facts.setup(f"hostile.outname.{case}.name", name)
    facts.contains(f"hostile.outname.{case}.message", record["error"]["message"], "outputFilename")
    assert zip_bytes is None
    written = set(list_keys(s3, stack.bucket, "")) - before
    assert written == {prefix + "CT/IM1", prefix + "manifest.json", f"compressed/{study}.result.json"}, written
    facts.equal(
        f"hostile.outname.{case}.output_keys_written", len(written - {prefix + "CT/IM1", prefix + "manifest.json"}), 1
    )
    assert open_uploads(s3, stack.bucket) == []
    [event] = events.for_prefix(prefix)
    assert event["detail-type"] == "Study Compression Failed" and event["detail"]["error"] == record["error"]
    facts.equal(f"hostile.outname.{case}.failure_events", len(events.for_prefix(prefix)), 1)
    assert queue_counts(sqs, stack.queue_url) == (0, 0)
    assert sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages", []) == []
