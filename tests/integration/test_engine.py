"""One study end to end: listing -> workers -> ordered ZIP -> result record, on real DICOM.

The per-file decisions are covered by tests/unit/test_files_corpus.py; here the unit is the study: every
object exactly once, in reading order, byte-for-byte when kept, totals that add up, an output an
independent decoder (Debian's GDCM) reads back bit-exact, and the same bytes whatever the number
of workers.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from pipeline.config import CompressionSettings
from pipeline.engine import Study, compress_study
from pipeline.files import encoders as W
from pipeline.outputs.local import write_local_outputs
from pipeline.study.listing import StudyObject, order_study
from pipeline.study.source import LocalStudySource
from tests.helpers.guards import communicate_or_fail
from tests.helpers.paths import ROOT
from tests.helpers.studies import FIXTURE_ORDER

LOSSLESS = CompressionSettings(mode="lossless")
LOSSY = CompressionSettings(rate=100)
TS_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
TS_J2K_LOSSY = "1.2.840.10008.1.2.4.91"
UNCOMPRESSED_TS = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
# Files whose structure is damaged in a way visible without decoding compressed pixel data.
BROKEN = (
    "edge-cases/non-conformant/MR_truncated.dcm",
    "edge-cases/non-conformant/rtplan_truncated.dcm",
    "edge-cases/non-conformant/meta_missing_tsyntax.dcm",
    "edge-cases/non-conformant/emri_small_jpeg_2k_lossless_too_short.dcm",
)
HANG_GUARD_SECONDS = 600  # a hang guard for the subprocess runs, never an assertion about speed
#: The child's exit status when the encoder pool waited with nothing in flight (PoolIdleWait).
IDLE_WAIT_EXIT = 3


# --------------------------------------------------------------------------- hang guard
#
# pipeline.files.encoders._Pool.run used to call multiprocessing.connection.wait() with an empty
# list (see test_pool_never_waits_with_nothing_in_flight), which blocks forever. Every engine call
# in this module runs with `wait` wrapped so that, should it come back, it raises at once instead
# of hanging the test run. Nothing else about `wait` changes.


class PoolIdleWait(Exception):
    """The encoder pool waited for results while no job was in flight: it would block forever."""


_REAL_WAIT = getattr(W, "wait", None)


def _guarded_wait(conns, timeout=None):
    if not conns:
        raise PoolIdleWait("wait() called with no connection while jobs remain: the study would never finish")
    return _REAL_WAIT(conns, timeout)


@pytest.fixture(autouse=True)
def _no_silent_hang(monkeypatch):
    if _REAL_WAIT is not None:
        monkeypatch.setattr(W, "wait", _guarded_wait)


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import pipeline.files.encoders as W

    real = getattr(W, "wait", None)

    class PoolIdleWait(Exception):
        pass

    def guarded(conns, timeout=None):
        if not conns:
            raise PoolIdleWait("wait() with nothing in flight")
        return real(conns, timeout)

    if real is not None:
        W.wait = guarded
    from pipeline.config import CompressionSettings
    from pipeline.engine import Study
    from pipeline.outputs.local import write_local_outputs
    from pipeline.study.source import LocalStudySource

    args = json.loads(sys.argv[1])
    record = write_local_outputs(
        Study.from_source(LocalStudySource(args["src"])), Path(args["zip"]),
        CompressionSettings(**args["settings"]), encoders=args["workers"],
    )
    message = (record.get("error") or {}).get("message", "")
    if record["status"] == "failed" and "PoolIdleWait" in message:
        print(f"PoolIdleWait: the study failed with: {message}", file=sys.stderr)
        sys.exit(3)  # IDLE_WAIT_EXIT
    """
)


def compress_in_subprocess(src: Path, zip_path: Path, settings: dict[str, Any], workers: int) -> dict[str, Any]:
    """``write_local_outputs`` in a child process (killed with its encoders if it ever hangs), once.

    Should the encoder pool wait with nothing in flight (the idle-wait hang, see
    test_pool_never_waits_with_nothing_in_flight), the child exits with IDLE_WAIT_EXIT and the
    test fails at once with the child's diagnosis: a regression, never retried away."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps({"src": str(src), "zip": str(zip_path), "settings": settings, "workers": workers}),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _, err = communicate_or_fail(proc, HANG_GUARD_SECONDS, f"compressing {src} (the engine hangs)")
    if proc.returncode == IDLE_WAIT_EXIT:
        pytest.fail(
            f"the encoder pool waited with nothing in flight (the idle-wait hang) compressing {src}:\n{err[-3000:]}",
            pytrace=False,
        )
    assert proc.returncode == 0, err[-3000:]
    return json.loads(zip_path.with_suffix(".result.json").read_text())


# --------------------------------------------------------------------------- helpers


def relative_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def natural_paths(paths: list[str]) -> list[str]:
    return [o.path for o in order_study(StudyObject(p, 0) for p in paths)]


def copy_fixture(fixture_study: Path, dest: Path) -> Path:
    shutil.copytree(fixture_study, dest)
    for p in dest.rglob("*"):  # the committed fixture is read-only
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def pixels(data: bytes) -> np.ndarray:
    return pixel_array(pydicom.dcmread(io.BytesIO(data)), as_rgb=False)


def files_by_path(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in record["files"]}


def require_gdcm() -> None:
    for tool in ("gdcmconv", "gdcminfo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install Debian's libgdcm-tools (`make tools`)")


# --------------------------------------------------------------------------- whole corpus as one study


@pytest.fixture(scope="module")
def corpus_study(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = tmp_path_factory.mktemp("corpus") / "study"
    shutil.copytree(corpus, study)
    return study


def _corpus_run(corpus_study: Path, tmp_path_factory: pytest.TempPathFactory, name: str, settings: dict[str, Any]):
    zip_path = tmp_path_factory.mktemp(name) / f"{name}.zip"
    record = compress_in_subprocess(corpus_study, zip_path, settings, workers=2)
    return zip_path, record


@pytest.fixture(scope="module")
def lossless_run(corpus_study, tmp_path_factory):
    return _corpus_run(corpus_study, tmp_path_factory, "lossless", {"mode": "lossless"})


@pytest.fixture(scope="module")
def lossy_run(corpus_study, tmp_path_factory):
    return _corpus_run(corpus_study, tmp_path_factory, "lossy", {"mode": "lossy", "rate": 100.0})


MODES = ["lossless_run", "lossy_run"]


def test_corpus_copy_is_complete(corpus_study, manifest):
    paths = relative_files(corpus_study)
    licences = [p for p in paths if p.startswith("LICENSES/")]
    assert len(manifest) == 421 and licences
    assert set(paths) == {r["file"] for r in manifest} | {"MANIFEST.csv", "README.md"} | set(licences)


@pytest.mark.parametrize("run", MODES)
def test_every_file_exactly_once_in_natural_order(run, request, corpus_study):
    zip_path, _ = request.getfixturevalue(run)
    paths = relative_files(corpus_study)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert len(names) == len(set(names)) == len(paths)
    assert names == natural_paths(paths)
    # Independently of the listing code: each folder's subtree is one block, and within a folder
    # names that differ only by a number come in numeric order (I90 < I100, 9.dcm < 10.dcm).
    folders = {n[:i] for n in names for i in range(len(n)) if n[i] == "/"}
    assert len(folders) > 25
    for folder in folders:
        inside = [i for i, n in enumerate(names) if n.startswith(folder + "/")]
        assert inside == list(range(inside[0], inside[-1] + 1)), f"{folder}/ is split"
    numbered = collections.defaultdict(list)
    for i, n in enumerate(names):
        folder, _, base = n.rpartition("/")
        m = re.fullmatch(r"(\D*)(\d+)(\D*)", base)
        if m:
            numbered[(folder, m.group(1), m.group(3))].append((int(m.group(2)), i))
    checked = 0
    for group in numbered.values():
        by_position = [value for value, _ in sorted(group, key=lambda t: t[1])]
        assert by_position == sorted(by_position), group
        checked += len(group) > 1
    assert checked >= 5
    philips = [n for n in names if n.startswith("ct-series/philips-ingenuity-phantom-study/S21610/S2010/")]
    assert philips.index("ct-series/philips-ingenuity-phantom-study/S21610/S2010/I90") < philips.index(
        "ct-series/philips-ingenuity-phantom-study/S21610/S2010/I100"
    )


@pytest.mark.parametrize("run", MODES)
def test_entries_are_the_source_bytes_or_a_valid_reencoding(run, request, corpus_study):
    zip_path, record = request.getfixturevalue(run)
    expected_ts = TS_J2K_LOSSLESS if run == "lossless_run" else TS_J2K_LOSSY
    files = files_by_path(record)
    kept = compressed = 0
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            source = (corpus_study / name).read_bytes()
            entry = zf.read(name)
            f = files[name]
            assert f["bytesIn"] == len(source), name
            assert f["bytesOut"] == len(entry), name
            if f["action"] == "kept":
                kept += 1
                assert entry == source, f"{name}: kept entries must be byte-for-byte"
                assert f.get("reason"), name
            else:
                compressed += 1
                assert f["action"] == "compressed", name
                ds = pydicom.dcmread(io.BytesIO(entry))
                assert ds.file_meta.TransferSyntaxUID == expected_ts, name
                assert f["transferSyntaxOut"] == expected_ts
                assert entry != source
    assert kept and compressed > 250


@pytest.mark.parametrize("run", MODES)
def test_record_covers_every_path_and_totals_add_up(run, request, corpus_study):
    zip_path, record = request.getfixturevalue(run)
    paths = relative_files(corpus_study)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert [f["path"] for f in record["files"]] == names
    assert sorted(f["path"] for f in record["files"]) == paths
    assert all("zipEntry" not in f for f in record["files"]), "no corpus name needs escaping"
    t, out = record["totals"], record["output"]
    assert t["files"] == len(paths) == t["compressed"] + t["kept"]
    assert t["compressed"] == sum(f["action"] == "compressed" for f in record["files"])
    assert t["bytesIn"] == sum((corpus_study / p).stat().st_size for p in paths)
    zip_bytes = zip_path.read_bytes()
    assert t["bytesOut"] == out["size"] == len(zip_bytes)
    assert out["sha256"] == hashlib.sha256(zip_bytes).hexdigest()
    assert out["entries"] == len(paths)
    assert out["path"] == str(zip_path)
    assert t["ignored"] == 0 and record["ignored"] == []
    assert not list(zip_path.parent.glob("*.part"))


@pytest.mark.parametrize("run", MODES)
def test_broken_files_make_the_study_succeed_with_warnings(run, request):
    _, record = request.getfixturevalue(run)
    assert record["status"] == "succeeded_with_warnings"
    assert record["error"] is None
    files = files_by_path(record)
    for path in BROKEN:
        assert files[path]["action"] == "kept" and files[path].get("warning"), path
        assert any(w.startswith(f"{path}: ") for w in record["warnings"]), path
    # Every per-file warning is in the study's warnings, and no file without one is.
    warned = {f["path"] for f in record["files"] if f.get("warning")}
    named = {w.split(": ", 1)[0] for w in record["warnings"] if not w.startswith("DICOMDIR ")}
    assert named == warned
    assert record["totals"]["fileWarnings"] == len(warned)


def test_dicomdir_stale_reference_warning_for_the_philips_study(lossless_run):
    _, record = lossless_run
    philips = "ct-series/philips-ingenuity-phantom-study/"
    stale = [w for w in record["warnings"] if w.startswith(f"DICOMDIR '{philips}")]
    assert stale, record["warnings"][:5]
    assert any("S2010" in w or "'" + philips + "DICOMDIR'" in w for w in stale)


def test_record_is_valid_json_next_to_the_zip(lossless_run):
    zip_path, record = lossless_run
    assert zip_path.with_suffix(".result.json").exists()
    assert record["settings"]["mode"] == "lossless" and record["settings"]["rate"] is None
    assert record["verification"]["enabled"] is True
    assert record["verification"]["bitExact"] == record["totals"]["compressed"]


# --------------------------------------------------------------------------- independent decoder (GDCM)


def _combination(data: bytes) -> tuple:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        str(ds.file_meta.TransferSyntaxUID),
        str(ds.PhotometricInterpretation).strip(),
        int(ds.BitsStored),
        int(ds.PixelRepresentation),
        int(ds.get("NumberOfFrames", 1) or 1) > 1,
    )


def _gdcm_raw(entry: bytes, workdir: Path, name: str) -> pydicom.Dataset:
    src, dst = workdir / f"{name}.in.dcm", workdir / f"{name}.raw.dcm"
    src.write_bytes(entry)
    proc = subprocess.run(
        ["gdcmconv", "--raw", str(src), str(dst)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"gdcmconv failed on {name}: {proc.stderr[-500:]}"
    return pydicom.dcmread(dst)


def test_gdcm_decodes_lossless_output_bit_exact(lossless_run, corpus_study, tmp_path):
    require_gdcm()
    zip_path, record = lossless_run
    compressed = [f["path"] for f in record["files"] if f["action"] == "compressed"]
    samples: dict[tuple, str] = {}
    for path in compressed:
        samples.setdefault(_combination((corpus_study / path).read_bytes()), path)
    assert len(samples) >= 10, samples  # the corpus has many kinds of uncompressed image
    extra = [p for p in compressed if p.endswith("_0x0F0F.dcm")]  # junk above High Bit
    assert len(extra) == 2
    with zipfile.ZipFile(zip_path) as zf:
        for i, path in enumerate(sorted(set(samples.values()) | set(extra))):
            source = (corpus_study / path).read_bytes()
            decoded = _gdcm_raw(zf.read(path), tmp_path, str(i))
            assert decoded.file_meta.TransferSyntaxUID != TS_J2K_LOSSLESS
            got = pixel_array(decoded, as_rgb=False)
            want = pixels(source)
            assert got.shape == want.shape, path
            assert np.array_equal(got, want), f"{path}: GDCM decodes different pixels"


def test_gdcm_reads_every_lossy_ct_entry(lossy_run, corpus_study, tmp_path):
    require_gdcm()
    zip_path, record = lossy_run
    ct = [f for f in record["files"] if f["path"].startswith("ct-series/") and f["action"] == "compressed"]
    assert len(ct) >= 80
    with zipfile.ZipFile(zip_path) as zf:
        for i, f in enumerate(ct):
            entry = zf.read(f["path"])
            src = tmp_path / f"{i}.dcm"
            src.write_bytes(entry)
            info = subprocess.run(["gdcminfo", str(src)], capture_output=True, text=True, timeout=120, check=False)
            assert info.returncode == 0, info.stderr[-500:]
            assert re.search(r"TransferSyntax is 1\.2\.840\.10008\.1\.2\.4\.91\b", info.stdout), info.stdout[:300]
            decoded = _gdcm_raw(entry, tmp_path, str(i))
            want = pixels((corpus_study / f["path"]).read_bytes())
            got = pixel_array(decoded, as_rgb=False)
            assert got.shape == want.shape, f["path"]
            # The independent decoder agrees with the record's own verification.
            err = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
            assert err == f["verification"]["maxAbsError"], f["path"]
            src.unlink()


# --------------------------------------------------------------------------- the committed fixture study


def _local(study_dir: Path, out_dir: Path, settings: CompressionSettings, workers: int | None = 2) -> tuple[Path, dict]:
    zip_path = out_dir / "study.zip"
    record = write_local_outputs(Study.from_source(LocalStudySource(study_dir)), zip_path, settings, encoders=workers)
    return zip_path, record


@pytest.mark.parametrize("settings", [LOSSLESS, LOSSY], ids=["lossless", "lossy"])
def test_same_bytes_with_one_or_two_workers(settings, fixture_study, tmp_path):
    one_zip, one = _local(fixture_study, tmp_path / "one", settings, workers=1)
    two_zip, two = _local(fixture_study, tmp_path / "two", settings, workers=2)
    assert one["status"] == two["status"] == "succeeded"
    assert one_zip.read_bytes() == two_zip.read_bytes()
    assert one["files"] == two["files"]
    assert one["output"]["sha256"] == two["output"]["sha256"] == hashlib.sha256(one_zip.read_bytes()).hexdigest()
    assert one["timings"]["encoders"] == 1 and two["timings"]["encoders"] == 2


def test_nested_study_order(fixture_study, tmp_path):
    zip_path, record = _local(fixture_study, tmp_path, LOSSLESS)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert names == FIXTURE_ORDER
    assert names.index("CT2/I50") < names.index("CT2/I100")
    assert [f["path"] for f in record["files"]] == FIXTURE_ORDER
    assert record["status"] == "succeeded" and record["warnings"] == []


def test_empty_truncated_and_non_dicom_files_are_kept_byte_for_byte(fixture_study, tmp_path):
    study = copy_fixture(fixture_study, tmp_path / "study")
    slice_bytes = (study / "CT2/I50").read_bytes()
    added = {
        "CT1/empty.dcm": b"",
        "CT2/I60": slice_bytes[: len(slice_bytes) // 2],  # cut inside the Pixel Data
        "notes/scan-notes.txt": b"Patient moved during series 2.\n",
    }
    for rel, data in added.items():
        (study / rel).parent.mkdir(parents=True, exist_ok=True)
        (study / rel).write_bytes(data)
    zip_path, record = _local(study, tmp_path / "out", LOSSLESS)
    files = files_by_path(record)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
        for rel, data in added.items():
            assert zf.read(rel) == data, rel
    assert len(names) == len(FIXTURE_ORDER) + 3
    assert names.index("CT2/I50") < names.index("CT2/I60") < names.index("CT2/I100")
    for rel in added:
        assert files[rel]["action"] == "kept" and files[rel]["reason"], rel
    assert files["CT2/I60"].get("warning") is True
    assert record["status"] == "succeeded_with_warnings"
    assert any(w.startswith("CT2/I60: ") for w in record["warnings"])
    assert record["totals"]["files"] == len(names)
    # The original slices are unaffected by their broken neighbour.
    assert all(files[p]["action"] == "compressed" for p in FIXTURE_ORDER if p.startswith("CT"))


def test_verify_off_records_skipped_and_output_is_still_valid(fixture_study, tmp_path):
    settings = CompressionSettings(mode="lossless", verify=False)
    zip_path, record = _local(fixture_study, tmp_path, settings)
    assert record["status"] == "succeeded"
    assert record["settings"]["verify"] is False
    v = record["verification"]
    assert v["enabled"] is False and v["bitExact"] == 0
    compressed = [f for f in record["files"] if f["action"] == "compressed"]
    assert len(compressed) == 10
    assert v["skipped"] == len(compressed)
    assert all(f["verification"] == {"status": "skipped"} for f in compressed)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        for f in compressed:
            entry = zf.read(f["path"])
            assert pydicom.dcmread(io.BytesIO(entry)).file_meta.TransferSyntaxUID == TS_J2K_LOSSLESS
            assert np.array_equal(pixels(entry), pixels((fixture_study / f["path"]).read_bytes())), f["path"]


@pytest.mark.parametrize(
    "content", [[], ["_READY"], ["_READY", "manifest.json"]], ids=["empty", "ready-only", "triggers-only"]
)
def test_empty_study_fails_and_leaves_no_zip(content, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    for name in content:
        (study / name).write_bytes(b"{}")
    out = tmp_path / "out"
    zip_path, record = _local(study, out, LOSSLESS)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "EmptyStudy"
    assert not zip_path.exists()
    assert sorted(p.name for p in out.iterdir()) == ["study.result.json"]
    assert json.loads((out / "study.result.json").read_text()) == record


def test_non_utf8_file_name_gets_an_escaped_entry(fixture_study, tmp_path):
    study = copy_fixture(fixture_study, tmp_path / "study")
    data = (study / "CT2/I50").read_bytes()
    with open(os.path.join(os.fsencode(study / "CT2"), b"I\xff70"), "wb") as fh:  # Latin-1 byte, not UTF-8
        fh.write(data)
    zip_path, record = _local(study, tmp_path / "out", LOSSLESS)
    assert record["status"] == "succeeded", record.get("error")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert len(names) == len(FIXTURE_ORDER) + 1
    (odd,) = [n for n in names if n not in FIXTURE_ORDER]
    assert odd.startswith("CT2/") and odd.isprintable()
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # the record stays valid UTF-8


# --------------------------------------------------------------------------- the worker pool's idle wait


def test_pool_never_waits_with_nothing_in_flight(tmp_path, monkeypatch):
    """Regression: _Pool.run used to fill the window before emitting results, so a pass that collected
    the last in-flight result of each worker while the window was full yielded them all and then
    called wait([]) with jobs still pending, blocking forever (about 1 in 4 whole-corpus runs with
    2 workers). This forces that schedule: worker 0's results are seen first, worker 1's later.

    ``wait`` is only made to report a subset of the connections that really are readable, as it
    does when the other worker's result arrives a moment later.
    """
    study = tmp_path / "study"
    study.mkdir()
    for i in range(1, 13):
        (study / f"note{i:02d}.txt").write_bytes(b"x" * i)
    script = [[0], [0], [0], [0], [0, 1], [0], [0, 1]]
    order: list[Any] = []

    def scripted(conns, timeout=None):
        if not conns:
            raise PoolIdleWait("wait() called with no connection while jobs remain")
        if not order:
            order.extend(conns)
        step = script.pop(0) if script else None
        if step is None:
            return _REAL_WAIT(conns, timeout)
        wanted = [order[i] for i in step if order[i] in conns] or list(conns)
        seen: set[Any] = set()
        while not set(wanted) <= seen:
            seen |= set(_REAL_WAIT(wanted, timeout))
        return wanted

    monkeypatch.setattr(W, "wait", scripted)
    run = compress_study(Study.from_source(LocalStudySource(study)), io.BytesIO(), LOSSLESS, encoders=2)
    assert [o.path for o in run.outcomes] == [f"note{i:02d}.txt" for i in range(1, 13)]
