"""Fuzzing (hypothesis): the parsers, the naming/ordering logic and the per-file DICOM path.

Bounded for CI (the whole file runs in well under a minute) and derandomized there: the same
examples on every run (hypothesis seeds each property from its own source), so the counts
RELIABILITY.md shows repeat. For a long local run, set ``FUZZ_EXAMPLES`` (``scripts/fuzz_long.sh``
does: 20,000 examples per property by default): random examples, and failing ones are kept in
``.hypothesis/`` and replayed first by the next such run.

Each property is run by a plain test that counts the cases it really ran (``Tally``) and asserts
the count (and, for ``process_file``, that enough mutated files are still re-encoded and
compared, not only kept).

Properties:

- ``parse_body`` never raises, whatever the SQS body; every trigger it returns is for our
  bucket, inside the source prefix, a marker, without empty/``.``/``..`` segments, and a key
  S3 could hold.
- ``parse_manifest`` raises nothing but ``ManifestError``; what it accepts keeps the output
  inside the target prefix and lists only safe relative paths.
- ``order_study`` + ``safe_entry_name``: every entry name passes
  ``pipeline.archive.check_entry_name``, names are unique, the order does not depend on the
  listing order, and the ZIP writer accepts them all.
- ``process_file`` on real corpus slices mutated by hypothesis (truncated at any offset, bytes
  flipped, inserted or overwritten anywhere): never raises; a kept file is byte-identical to
  its input; a compressed one decodes, and (lossless) equals the input's ``pixel_array``.
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.archive import ZipStreamWriter, check_entry_name
from pipeline.config import CompressionSettings
from pipeline.study.listing import (
    TRIGGER_NAMES,
    StudyObject,
    order_study,
    safe_entry_name,
)
from pipeline.study.manifest import ManifestError, parse_manifest
from pipeline.trigger.events import Dropped, StudyTrigger, parse_body
from tests.helpers.aws import s3_notification
from tests.helpers.facts import Facts

BUCKET = "dicom-compression-local-data"
SOURCE_PREFIX = "incoming/"


def examples(default: int) -> int:
    """``FUZZ_EXAMPLES`` (the long run) or the CI default."""
    return int(os.environ.get("FUZZ_EXAMPLES") or default)


def fuzz(default: int) -> Any:
    return settings(
        max_examples=examples(default),
        deadline=None,
        # The CI-sized run tests the same examples every time (no database: derandomize implies
        # none); the long run draws new ones and keeps its failures in .hypothesis/.
        derandomize=not os.environ.get("FUZZ_EXAMPLES"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


Tally = Counter  # what one property's cases led to; "cases" counts them all


def run_property(facts: Facts, name: str, prop: Any, *args: Any, default: int, explicit: int = 0) -> Tally[str]:
    """Run the hypothesis property ``prop`` (``args`` first, then a Tally, then its strategies), and
    assert it ran exactly its ``max_examples`` generated cases plus its ``explicit`` examples."""
    tally: Tally[str] = Counter()
    prop(*args, tally)
    facts.equal(f"fuzz.{name}.cases", tally["cases"], examples(default) + explicit)
    print(f"\nfuzz {name}: {dict(tally)}")
    return tally


# --------------------------------------------------------------------------- strategies

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
SEGMENTS = [
    "incoming",
    "compressed",
    "clinic-7",
    "study 1",
    "CT1",
    "..",
    ".",
    "",
    "_READY",
    "manifest.json",
    "%2E%2E",
    "a+b",
    "ü",
    "日本",
    "C:",
    "con",
    "x" * 300,
    "\x00",
    "\x1f",
    "\\",
    "a\\..\\b",
    "~2",
    "10",
    "2",
]
segment = st.sampled_from(SEGMENTS) | st.text(max_size=12)
paths = st.lists(segment, min_size=1, max_size=7).map("/".join)


@st.composite
def s3_records(draw: Any) -> Any:
    key = draw(paths | st.builds(lambda p, m: "incoming/" + p + "/" + m, paths, st.sampled_from(sorted(TRIGGER_NAMES))))
    record = s3_notification(
        draw(st.sampled_from([BUCKET, "other-bucket", ""])),
        "x",
        event_name=draw(
            st.sampled_from(
                [
                    "ObjectCreated:Put",
                    "ObjectCreated:CompleteMultipartUpload",
                    "ObjectRemoved:Delete",
                    "ObjectCreated",
                    "",
                ]
            )
        ),
    )["Records"][0]
    record["s3"]["object"]["key"] = quote_plus(key) if draw(st.booleans()) else key
    # Break it here and there: drop or replace fields with any JSON value.
    for path in draw(
        st.lists(
            st.sampled_from(
                [
                    ("eventSource",),
                    ("eventName",),
                    ("s3",),
                    ("s3", "bucket"),
                    ("s3", "object"),
                    ("s3", "bucket", "name"),
                    ("s3", "object", "key"),
                    ("s3", "object", "size"),
                    ("eventTime",),
                ]
            ),
            max_size=3,
        )
    ):
        parent = record
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            if draw(st.booleans()):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
    return record


@st.composite
def sqs_bodies(draw: Any) -> str:
    kind = draw(st.sampled_from(["text", "json", "records", "sns", "test-event"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "test-event":
        return json.dumps({"Event": "s3:TestEvent", "Bucket": BUCKET, "Junk": draw(json_values)})
    body = json.dumps({"Records": draw(st.lists(s3_records() | json_values, min_size=0, max_size=4))})
    if kind == "sns":
        body = json.dumps({"Type": "Notification", "Message": body})
    return body


# --------------------------------------------------------------------------- the event parser


@fuzz(400)
@given(sqs_bodies())
def _parse_body_sound(tally: Tally[str], body: str) -> None:
    tally["cases"] += 1
    out = parse_body(body, bucket=BUCKET, source_prefix=SOURCE_PREFIX)
    assert out and all(isinstance(item, (StudyTrigger, Dropped)) for item in out)
    for item in out:
        if isinstance(item, Dropped):
            assert item.reason
            continue
        assert item.bucket == BUCKET
        assert item.key.startswith(SOURCE_PREFIX) and item.marker in TRIGGER_NAMES
        assert all(part not in ("", ".", "..") for part in item.key[len(SOURCE_PREFIX) :].split("/"))
        assert item.study_prefix.endswith("/") and item.study_prefix != SOURCE_PREFIX
        assert len(item.key.encode("utf-8")) <= 1024
        tally["triggers"] += 1


def test_parse_body_never_raises_and_triggers_are_sound(facts: Facts) -> None:
    tally = run_property(facts, "parse_body", _parse_body_sound, default=400)
    # Most generated bodies are dropped; the checks on a trigger must have run at least once.
    facts.bound("fuzz.parse_body.triggers", tally["triggers"], ">=", 1, of=tally["cases"])


@fuzz(200)
@given(st.binary(max_size=400))
def _parse_body_bytes(tally: Tally[str], raw: bytes) -> None:
    tally["cases"] += 1
    out = parse_body(raw.decode("utf-8", "surrogateescape"), bucket=BUCKET, source_prefix=SOURCE_PREFIX)
    assert out and all(isinstance(item, (StudyTrigger, Dropped)) for item in out)


def test_parse_body_on_arbitrary_bytes(facts: Facts) -> None:
    run_property(facts, "parse_body_bytes", _parse_body_bytes, default=200)


# --------------------------------------------------------------------------- the manifest parser

manifest_files = st.lists(
    st.fixed_dictionaries(
        {"path": paths | st.sampled_from(["CT1/0001.dcm", "manifest.json", "a/manifest.json"])},
        optional={
            "size": st.integers(-5, 10**12) | json_values,
            "sha256": st.sampled_from(["0" * 64, "A" * 64, "xyz"]) | json_values,
            "extra": json_values,
        },
    ),
    max_size=5,
)
manifest_docs = st.fixed_dictionaries(
    {},
    optional={
        "compressionRate": st.sampled_from([0, 1, 1.5, 100, 10_000, 10_001, -1, True]) | json_values,
        "mode": st.sampled_from(["lossy", "lossless", "LOSSLESS"]) | json_values,
        "codec": st.sampled_from(["j2k", "htj2k", "jpeg"]) | json_values,
        "outputFilename": st.sampled_from(
            ["study.zip", "study", "../x.zip", "/x.zip", "a/b.zip", "..", ".", "x\\y.zip", "x\x00.zip", " ", "é" * 200]
        )
        | paths
        | json_values,
        "overwriteExisting": st.booleans() | json_values,
        "verify": st.booleans() | json_values,
        "files": manifest_files | json_values,
        "metadata": json_values,
        "unknownField": json_values,
    },
)


def _check_manifest(tally: Tally[str], raw: bytes) -> None:
    from pipeline.job.config import ServiceConfig
    from pipeline.job.plan import output_keys

    tally["cases"] += 1
    try:
        m = parse_manifest(raw)
    except ManifestError as exc:
        assert str(exc)
        tally["refused"] += 1
        return
    tally["accepted"] += 1
    if m.output_filename is not None:
        name = m.output_filename
        assert name.endswith(".zip") and "/" not in name and "\\" not in name
        assert name not in (".", "..") and not any(ord(c) < 0x20 for c in name)
    cfg = ServiceConfig.from_env({"DATA_BUCKET": BUCKET})
    zip_key, record_key = output_keys(cfg, "clinic-7/study-1", m)
    assert zip_key.startswith("compressed/clinic-7/") and record_key.startswith("compressed/clinic-7/")
    assert ".." not in zip_key.split("/") and posixpath.normpath(zip_key) == zip_key
    for f in m.files or ():
        assert f.path and not f.path.startswith("/") and "\\" not in f.path
        assert all(part not in ("", ".", "..") for part in f.path.split("/"))
        assert isinstance(f.size, int) and f.size >= 0
    try:
        m.settings(CompressionSettings())
    except ManifestError:
        pass


@fuzz(400)
@given(manifest_docs)
def _manifest_structured(tally: Tally[str], doc: dict[str, Any]) -> None:
    _check_manifest(tally, json.dumps(doc).encode())


def test_parse_manifest_structured(facts: Facts) -> None:
    tally = run_property(facts, "parse_manifest", _manifest_structured, default=400)
    facts.bound("fuzz.parse_manifest.accepted", tally["accepted"], ">=", 1, of=tally["cases"])


@fuzz(200)
@given(
    st.binary(max_size=600) | st.builds(lambda d, cut: json.dumps(d).encode()[:cut], manifest_docs, st.integers(0, 400))
)
def _manifest_raw(tally: Tally[str], raw: bytes) -> None:
    _check_manifest(tally, raw)


def test_parse_manifest_raw_bytes(facts: Facts) -> None:
    tally = run_property(facts, "parse_manifest_bytes", _manifest_raw, default=200)
    facts.bound("fuzz.parse_manifest_bytes.accepted", tally["accepted"], ">=", 1, of=tally["cases"])


# --------------------------------------------------------------------------- names and order

name_chars = st.sampled_from(list("aA0129/./\\:%~ _-") + ["..", "ü", "日", "\x00", "\x01", "\x1f", "\x7f", "\u200b"])
study_paths = st.lists(name_chars, min_size=0, max_size=40).map("".join) | paths


@fuzz(300)
@given(st.lists(study_paths, min_size=1, max_size=25, unique=True), st.randoms(use_true_random=False))
def _entry_names(tally: Tally[str], names: list[str], rnd: Any) -> None:
    tally["cases"] += 1
    tally["names"] += len(names)
    objects = [StudyObject(p, i) for i, p in enumerate(names)]
    ordered = order_study(objects)
    entries = [o.entry_name for o in ordered]
    assert sorted(o.path for o in ordered) == sorted(names)
    assert len(set(entries)) == len(entries)
    for entry in entries:
        assert check_entry_name(entry) == entry
    for p in names:
        check_entry_name(safe_entry_name(p))
    shuffled = objects[:]
    rnd.shuffle(shuffled)
    assert [(o.path, o.entry_name) for o in order_study(shuffled)] == [(o.path, o.entry_name) for o in ordered]
    buf = io.BytesIO()
    writer = ZipStreamWriter(buf)
    for o in ordered:
        writer.add_bytes(o.entry_name, o.path.encode("utf-8"))
    writer.close()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert zf.namelist() == entries


def test_entry_names_are_safe_unique_and_order_independent(facts: Facts) -> None:
    run_property(facts, "entry_names", _entry_names, default=300)


# --------------------------------------------------------------------------- the per-file DICOM path

SEED_FILES = [
    "mr-series/hitachi-anatomical-4/001.dcm",  # 64x64 MR, explicit VR LE
    "edge-cases/photometric-bitdepth/CT_small.dcm",  # 128x128 CT
    "edge-cases/transfer-syntax/MR_small_bigendian.dcm",  # explicit VR big endian
    "edge-cases/transfer-syntax/MR_small_implicit.dcm",  # implicit VR
    "edge-cases/transfer-syntax/image_dfl.dcm",  # deflated
    "edge-cases/photometric-bitdepth/SC_rgb.dcm",  # RGB
    "multiframe/emri_small.dcm",  # 10 frames
    "ct-series/ge-hispeed-head-tilt/05.dcm",  # a real 512x512 CT slice
]


class Seeds(dict):  # type: ignore[type-arg]
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<{len(self)} corpus seed files>"


@pytest.fixture(scope="module")
def seeds(corpus: Path) -> dict[str, bytes]:
    return Seeds({name: (corpus / name).read_bytes() for name in SEED_FILES})


@st.composite
def mutations(draw: Any) -> list[tuple[str, int, Any]]:
    """Up to three edits, at any offset (a third of them in the header after 'DICM', a third in
    the preamble and prefix, a third anywhere in the file)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "overwrite"]))
        where = draw(
            st.one_of(
                st.integers(132, 2047).map(lambda b: ("head", b)),  # the header, after 'DICM'
                st.floats(0, 1, exclude_max=True).map(lambda f: ("frac", f)),  # anywhere
                st.integers(0, 131).map(lambda b: ("head", b)),
            )
        )  # preamble and 'DICM'
        payload = (
            draw(st.integers(0, 7))
            if kind == "flip"
            else draw(st.binary(min_size=1, max_size=16))
            if kind in ("insert", "overwrite")
            else None
        )
        edits.append((kind, where, payload))
    return edits


def mutate(data: bytes, edits: list[tuple[str, Any, Any]]) -> bytes:
    buf = bytearray(data)
    for kind, (how, at), payload in edits:
        if not buf:
            break
        offset = min(at, len(buf) - 1) if how == "head" else int(at * len(buf))
        if kind == "truncate":
            del buf[offset:]
        elif kind == "flip":
            buf[offset] ^= 1 << payload
        elif kind == "insert":
            buf[offset:offset] = payload
        else:
            buf[offset : offset + len(payload)] = payload
    return bytes(buf)


def _pixels(data: bytes) -> Any:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    return pixel_array(dcmread(io.BytesIO(data)), as_rgb=False)


def _check_outcome(path: str, data: bytes, settings_: CompressionSettings, tally: Tally[str] | None = None) -> str:
    """Check one file's outcome; its action ("kept" or "compressed"), counted in ``tally``."""
    from pipeline.files.process import process_file

    outcome = process_file(path, data, settings_)  # must not raise, whatever the bytes
    assert outcome.action in ("kept", "compressed") and outcome.path == path
    if tally is not None:  # what the mutations led to (the kept ones by the reason's first words)
        tally["cases"] += 1
        tally[outcome.action] += 1
        if outcome.action == "kept":
            tally[f"kept: {(outcome.reason or '').split(':')[0][:48]}"] += 1
    if outcome.action == "kept":
        assert outcome.data == data, "a kept file must be byte-identical to its input"
        assert outcome.reason
        return outcome.action
    assert outcome.data and outcome.data[128:132] == b"DICM"
    out = _pixels(outcome.data)
    src = _pixels(data)
    assert out.shape == src.shape
    if settings_.lossless:
        assert outcome.verification == {"status": "bit-exact"} or outcome.verification["status"] == "bit-exact"
        assert (out == src).all(), "lossless output differs from the input's pixel_array"
    else:
        assert outcome.verification["status"] == "lossy"
    if tally is not None:
        tally["compared"] += 1  # decoded and compared with its (mutated) source above
    return outcome.action


# Found by this fuzzer, fixed in pipeline/files/process.py (see RELIABILITY.md): kept as regressions.
FOUND = [
    ("edge-cases/transfer-syntax/MR_small_implicit.dcm", [("flip", ("head", 254), 0)]),  # TS UID not a transfer syntax
    ("edge-cases/transfer-syntax/MR_small_bigendian.dcm", [("flip", ("head", 950), 0)]),  # big endian, unknown VR 'HS'
    ("edge-cases/transfer-syntax/MR_small_bigendian.dcm", [("flip", ("head", 1002), 0)]),  # big endian, unknown VR 'ES'
]


def _found(test: Any) -> Any:
    for name, edits in FOUND:
        test = example(name=name, edits=edits)(test)
    return test


#: At least this share of the mutated files must still be re-encoded (and so decoded and compared
#: with their mutated source), not only kept: a fuzzer whose every case is kept tests little.
MIN_RECOMPRESSED = 0.10


@fuzz(300)
@_found
@given(st.sampled_from(SEED_FILES), mutations())
def _mutated_lossless(seeds: dict[str, bytes], tally: Tally[str], name: str, edits: Any) -> None:
    _check_outcome(name, mutate(seeds[name], edits), CompressionSettings(mode="lossless"), tally)


@fuzz(100)
@_found
@given(st.sampled_from(SEED_FILES), mutations())
def _mutated_lossy(seeds: dict[str, bytes], tally: Tally[str], name: str, edits: Any) -> None:
    _check_outcome(name, mutate(seeds[name], edits), CompressionSettings(mode="lossy", rate=20), tally)


def _check_mutated(facts: Facts, name: str, prop: Any, seeds: dict[str, bytes], default: int) -> None:
    facts.setup("fuzz.seed_files", SEED_FILES)
    facts.setup("fuzz.found_regressions", len(FOUND))
    facts.setup("fuzz.min_recompressed_percent", round(100 * MIN_RECOMPRESSED), unit="%")
    tally = run_property(facts, name, prop, seeds, default=default, explicit=len(FOUND))
    facts.equal(f"fuzz.{name}.kept", tally["kept"], tally["cases"] - tally["compressed"], of=tally["cases"])
    facts.equal(f"fuzz.{name}.compared", tally["compared"], tally["compressed"], of=tally["cases"])
    least = math.ceil(MIN_RECOMPRESSED * tally["cases"])
    facts.bound(f"fuzz.{name}.compressed", tally["compressed"], ">=", least, of=tally["cases"])


def test_process_file_on_mutated_slices_lossless(seeds: dict[str, bytes], facts: Facts) -> None:
    _check_mutated(facts, "process_file_lossless", _mutated_lossless, seeds, 300)


def test_process_file_on_mutated_slices_lossy(seeds: dict[str, bytes], facts: Facts) -> None:
    _check_mutated(facts, "process_file_lossy", _mutated_lossy, seeds, 100)


@pytest.mark.parametrize("name", SEED_FILES)
def test_unmutated_seeds_compress(seeds: dict[str, bytes], name: str) -> None:
    """The seeds themselves are re-encoded (so mutations start from the compress path)."""
    assert _check_outcome(name, seeds[name], CompressionSettings(mode="lossless")) == "compressed"
