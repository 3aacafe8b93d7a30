"""``manifest.json``: what a valid one means, and a ManifestError naming the field otherwise."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import CompressionSettings
from pipeline.study.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_METADATA_BYTES,
    Manifest,
    ManifestError,
    ManifestFile,
    parse_manifest,
)

BASE = CompressionSettings()
DIGEST = hashlib.sha256(b"slice").hexdigest()


def parse(doc: object) -> Manifest:
    return parse_manifest(json.dumps(doc).encode())


def error(doc: object | bytes) -> str:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    return str(info.value)


# --------------------------------------------------------------------------- valid


def test_empty_object_means_defaults() -> None:
    m = parse({})
    assert m == Manifest()
    assert m.files is None and m.metadata is None and m.overwrite_existing is False and m.output_filename is None
    assert m.settings(BASE) == BASE
    assert m.settings(BASE).describe() == {
        "mode": "lossy",
        "rate": 100.0,
        "codec": "j2k",
        "verify": True,
        "minPsnrDb": 40.0,
    }


def test_deployment_defaults_are_kept_when_not_overridden() -> None:
    base = CompressionSettings(rate=40, codec="htj2k", verify=False)
    assert parse({"metadata": {"a": 1}}).settings(base) == base


def test_compression_rate_zero_means_lossless() -> None:
    s = parse({"compressionRate": 0}).settings(BASE)
    assert s.lossless and s.mode == "lossless"
    assert s.describe()["rate"] is None
    assert s.fingerprint() == CompressionSettings(mode="lossless").fingerprint()


def test_compression_rate_sets_lossy_rate() -> None:
    m = parse({"compressionRate": 25})
    assert m.compression_rate == 25.0 and isinstance(m.compression_rate, float)
    s = m.settings(CompressionSettings(mode="lossless"))
    assert (s.mode, s.rate) == ("lossy", 25.0)
    assert parse({"compressionRate": 12.5}).settings(BASE).rate == 12.5


def test_mode_lossless() -> None:
    s = parse({"mode": "lossless"}).settings(BASE)
    assert s.lossless and s.describe()["rate"] is None
    # mode wins over a rate given alongside it
    assert parse({"mode": "lossless", "compressionRate": 50}).settings(BASE).lossless


def test_codec_and_verify() -> None:
    s = parse({"codec": "htj2k", "verify": False}).settings(BASE)
    assert (s.codec, s.verify) == ("htj2k", False)


def test_files_with_sha256() -> None:
    m = parse(
        {
            "files": [
                {"path": "CT1/01.dcm", "size": 526228, "sha256": DIGEST.upper()},
                {"path": "CT2/I10", "size": 0},
                {"path": "report/sub dir/Zürich.dcm", "size": 7},
            ]
        }
    )
    assert m.files == (
        ManifestFile("CT1/01.dcm", 526228, DIGEST),  # normalised to lower case
        ManifestFile("CT2/I10", 0, None),
        ManifestFile("report/sub dir/Zürich.dcm", 7, None),
    )


def test_manifest_json_in_a_subfolder_is_a_normal_file() -> None:
    assert parse({"files": [{"path": "sub/manifest.json", "size": 2}]}).files == (ManifestFile("sub/manifest.json", 2),)


def test_metadata_echoed_as_given() -> None:
    metadata = {"clinic": "clinic-7", "order": ["demo-1", 2, None, {"nested": True}], "note": "Zürich ✓"}
    assert parse({"metadata": metadata}).metadata == metadata
    assert parse({"metadata": "just a string"}).metadata == "just a string"


def test_output_filename_and_overwrite() -> None:
    m = parse({"outputFilename": "study 1 Zürich", "overwriteExisting": True})
    assert m.output_filename == "study 1 Zürich.zip"
    assert m.overwrite_existing is True
    assert parse({"outputFilename": "a.ZIP"}).output_filename == "a.ZIP"
    assert parse({"outputFilename": "..zip"}).output_filename == "..zip"  # a plain name, not a parent


def test_all_fields_together() -> None:
    m = parse(
        {
            "compressionRate": 30,
            "mode": "lossy",
            "codec": "j2k",
            "outputFilename": "x.zip",
            "overwriteExisting": False,
            "files": [{"path": "a", "size": 1}],
            "metadata": {"k": "v"},
            "verify": True,
            "minPsnrDb": 35,
            "report": True,
        }
    )
    assert m.settings(BASE).describe() == {
        "mode": "lossy",
        "rate": 30.0,
        "codec": "j2k",
        "verify": True,
        "minPsnrDb": 35.0,
    }
    assert m.report is True


@pytest.mark.parametrize("value", [-1, 121, "40", True, None])
def test_min_psnr_must_be_a_number_of_db(value) -> None:
    if value is None:
        assert parse({"minPsnrDb": 0}).settings(BASE).floor is None  # 0 turns the floor off
        return
    with pytest.raises(ManifestError, match="minPsnrDb"):
        parse({"minPsnrDb": value})


def test_utf8_bom_is_not_accepted_silently_or_crashes() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps({"compressionRate": 0}).encode()
    try:
        parse_manifest(raw)
    except ManifestError as exc:
        assert "JSON" in str(exc)


# --------------------------------------------------------------------------- invalid


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"{'mode': 'lossy'}", b"\xff\xfe{}", b"{}}", b'{"a":1,}'])
def test_not_json(raw: bytes) -> None:
    assert "not valid JSON" in error(raw)


@pytest.mark.parametrize("doc", [[], [{"compressionRate": 0}], "lossless", 0, None, True])
def test_not_an_object(doc: object) -> None:
    assert "must be a JSON object" in error(doc)


def test_unknown_field_is_named() -> None:
    msg = error({"compressionRate": 10, "compresionRate": 10, "outputFileName": "x"})
    assert "unknown fields" in msg and "compresionRate" in msg and "outputFileName" in msg


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"compressionRate": "100"}, "compressionRate"),
        ({"compressionRate": True}, "compressionRate"),
        ({"compressionRate": None, "mode": 1}, "mode"),
        ({"compressionRate": [100]}, "compressionRate"),
        ({"compressionRate": -1}, "compressionRate"),
        ({"mode": "near-lossless"}, "mode"),
        ({"mode": "LOSSLESS"}, "mode"),
        ({"codec": "jpeg"}, "codec"),
        ({"codec": True}, "codec"),
        ({"verify": "yes"}, "verify"),
        ({"verify": 1}, "verify"),
        ({"overwriteExisting": "true"}, "overwriteExisting"),
        ({"overwriteExisting": None}, "overwriteExisting"),
        ({"outputFilename": 5}, "outputFilename"),
        ({"outputFilename": ""}, "outputFilename"),
        ({"outputFilename": "   "}, "outputFilename"),
        ({"files": []}, "files"),
        ({"files": {"a": 1}}, "files"),
        ({"files": "a"}, "files"),
        ({"files": ["a"]}, "files[0]"),
        ({"files": [{"path": "a", "size": 1, "md5": "x"}]}, "files[0]"),
        ({"files": [{"path": 3, "size": 1}]}, "files[0].path"),
        ({"files": [{"size": 1}]}, "files[0].path"),
        ({"files": [{"path": "a", "size": 1}, {"path": "b"}]}, "files[1].size"),
        ({"files": [{"path": "a", "size": "1"}]}, "files[0].size"),
        ({"files": [{"path": "a", "size": 1.5}]}, "files[0].size"),
        ({"files": [{"path": "a", "size": True}]}, "files[0].size"),
        ({"files": [{"path": "a", "size": -1}]}, "files[0].size"),
    ],
)
def test_bad_types_and_values_name_the_field(doc: object, field: str) -> None:
    assert field in error(doc)


@pytest.mark.parametrize("digest", ["", "abc", DIGEST[:-1], DIGEST + "0", "g" * 64, " " + DIGEST[1:], 123, ["x"]])
def test_bad_sha256(digest: object) -> None:
    msg = error({"files": [{"path": "ok", "size": 1}, {"path": "a", "size": 1, "sha256": digest}]})
    assert "files[1].sha256" in msg and "64 hexadecimal" in msg


def test_duplicate_paths() -> None:
    msg = error(
        {
            "files": [
                {"path": "CT1/01.dcm", "size": 1},
                {"path": "CT2/01.dcm", "size": 1},
                {"path": "CT1/01.dcm", "size": 1},
            ]
        }
    )
    assert "files[2].path" in msg and "twice" in msg


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/abs",
        "a\\b",
        "..\\x",
        "a/../../x",
        "a/./b",
        "./a",
        "a//b",
        "a/",
        "",
        ".",
        "..",
        "manifest.json",
        "C:\\Windows\\x",
    ],
)
def test_unsafe_file_paths(path: str) -> None:
    msg = error({"files": [{"path": path, "size": 1}]})
    assert "files[0].path" in msg and "relative path inside the study folder" in msg


@pytest.mark.parametrize(
    "name",
    [
        "../x.zip",
        "a/b.zip",
        "/x.zip",
        "..",
        ".",
        "..\\x.zip",
        "a\\b",
        "x\n.zip",
        "x\x00.zip",
        "../../compressed/other.zip",
    ],
)
def test_output_filename_cannot_leave_target_prefix(name: str) -> None:
    msg = error({"outputFilename": name})
    assert "outputFilename" in msg


def test_output_filename_too_long() -> None:
    assert "outputFilename" in error({"outputFilename": "é" * 128 + ".zip"})


def test_manifest_larger_than_1_mib() -> None:
    doc = {"metadata": {"pad": "x" * 100}, "files": [{"path": f"f{i:07d}", "size": i} for i in range(40_000)]}
    raw = json.dumps(doc).encode()
    assert len(raw) > MAX_MANIFEST_BYTES
    msg = error(raw)
    assert "manifest.json" in msg and "limit" in msg and f"{MAX_MANIFEST_BYTES:,}" in msg


def test_manifest_just_under_the_limit_is_parsed() -> None:
    files = [{"path": f"f{i:07d}", "size": i} for i in range(20_000)]
    raw = json.dumps({"files": files}).encode()
    assert len(raw) <= MAX_MANIFEST_BYTES
    assert len(parse_manifest(raw).files or ()) == 20_000


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_nesting_10000_deep(opener: str, closer: str) -> None:
    raw = ('{"metadata": ' + opener * 10_000 + "1" + closer * 10_000 + "}").encode()
    try:
        msg = error(raw)
    except RecursionError:  # pragma: no cover - the failure this guards against
        pytest.fail("RecursionError escaped parse_manifest")
    assert "nested deeper" in msg


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    m = parse({"metadata": {"note": "[" * 1000 + '{\\"' * 100}})
    assert m.metadata["note"].startswith("[[[")


def test_metadata_too_large() -> None:
    msg = error({"metadata": {"notes": "x" * (MAX_METADATA_BYTES + 1)}})
    assert "metadata" in msg and "larger" in msg


def test_rate_outside_the_codec_range_is_a_manifest_error_naming_the_field() -> None:
    for rate in (0.5, 1, 10_001):
        with pytest.raises(ManifestError, match="compressionRate"):
            parse({"compressionRate": rate})


@pytest.mark.parametrize("raw", [b'{"metadata": NaN}', b'{"metadata": {"x": Infinity}}', b'{"compressionRate": NaN}'])
def test_nan_and_infinity_are_not_json(raw: bytes) -> None:
    with pytest.raises(ManifestError, match="JSON"):
        parse_manifest(raw)


def test_output_filename_lone_surrogate_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="surrogate"):
        parse_manifest(b'{"outputFilename": "\\ud800.zip"}')


@pytest.mark.parametrize("raw", [b'{"metadata": {"a": "\\udc80"}}', b'{"files": [{"path": "\\ud800", "size": 1}]}'])
def test_lone_surrogates_are_refused(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw)


# --------------------------------------------------------------------------- properties


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
@example(b"[" * 50_000)
@example(b'"\\' + b"[" * 100)
@example(b"\xef\xbb\xbf{}")
@example(b'{"compressionRate": 1e999}')
@example(b"9" * 5000)
def test_arbitrary_bytes_give_a_manifest_or_a_manifest_error(raw: bytes) -> None:
    try:
        result = parse_manifest(raw)
    except ManifestError:
        return
    assert isinstance(result, Manifest)


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json = st.recursive(
    _leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=12
)
_path = st.sampled_from(["a", "CT1/01.dcm", "../x", "/abs", "a\\b", "", "manifest.json", "x/manifest.json"]) | st.text(
    max_size=12
)
_file = st.fixed_dictionaries(
    {},
    optional={
        "path": _path | _json,
        "size": st.integers(-2, 10**9) | _json,
        "sha256": st.just(DIGEST) | st.text(max_size=64) | _json,
    },
)
_manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "compressionRate": st.sampled_from([0, 1, 50, 100.5, -1]) | _json,
        "mode": st.sampled_from(["lossy", "lossless"]) | _json,
        "codec": st.sampled_from(["j2k", "htj2k"]) | _json,
        "verify": _json,
        "outputFilename": st.sampled_from(["x", "x.zip", "../x", "a/b"]) | st.text(max_size=20) | _json,
        "overwriteExisting": _json,
        "files": st.lists(_file | _json, max_size=4) | _json,
        "metadata": _json,
        "extra": _json,
    },
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(_manifest_like)
def test_manifest_shaped_documents_give_a_manifest_or_a_manifest_error(doc: dict) -> None:
    try:
        m = parse_manifest(json.dumps(doc).encode())
    except ManifestError:
        return
    assert isinstance(m, Manifest)
    try:
        m.settings(BASE)
    except ManifestError:
        pass
    # What was accepted is what was asked for.
    if m.files is not None:
        assert [f.path for f in m.files] == [f["path"] for f in doc["files"]]
    assert m.metadata == doc.get("metadata")
