"""Every compressed output of a sample of each corpus category, opened by real consumers: Orthanc
(+ GDCM plugin) stores it and returns its first and last frames with the source's values (lossless)
or within the recorded maximum error (lossy); dcmdump parses it; dciodvfy finds no error the
source did not have (bar the exceptions README "Interoperability" documents); opj_decompress and
python-gdcm decode the codestreams. The results make the README's consumer table
(`build/interop-table.md`; the last test checks the README holds the same)."""

from __future__ import annotations

import math
import urllib.error
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from pipeline.files.process import process_file
from tests.helpers.consumers import Orthanc, dciodvfy_errors, dcmdump_ok, gdcm_decode, missing_tools, opj_decode
from tests.helpers.interop_sample import SAMPLE, SETTINGS

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "build" / "interop-table.md"
HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
#: dciodvfy errors an output may add, with the reason (README "Interoperability").
DOCUMENTED = {
    # dicom3tools' US Image module allows only YBR_RCT/YBR_ICT with JPEG 2000; PS3.5 8.2.4 allows
    # RGB without the colour transform, which is what every consumer here renders.
    "Error - Unrecognized enumerated value <RGB> for value 1 of attribute <Photometric Interpretation>": "US RGB without the colour transform",
}
#: consumer -> transfer syntax label -> [passed, total, notes]
RESULTS: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0, set()]))
DCIODVFY_COUNTS: dict[str, list[int]] = defaultdict(lambda: [0, 0])
#: (path, settings label) -> the table column: the transfer syntax actually written (the quality
#: floor writes an image no lossy encoding holds to it as lossless).
COLUMN: dict[tuple[str, str], str] = {}
_LOSSLESS_COLUMN = {
    "J2K lossy .91": "J2K lossless .90",
    "HTJ2K lossy .203": "HTJ2K lossless RPCL .202",
    "J2K lossy .91, YBR_ICT": "J2K lossless .90, YBR_RCT",
}


def _record(consumer: str, key: tuple[str, str], ok: bool, note: str = "") -> None:
    cell = RESULTS[consumer][COLUMN.get(key, key[1])]
    cell[0] += int(ok)
    cell[1] += 1
    if note:
        cell[2].add(note)


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (`make tools` installs them from Debian)")


@pytest.fixture(scope="module")
def outputs(corpus, tmp_path_factory):
    """(corpus path, transfer syntax label) -> (source path, source dataset, output path, output dataset, outcome)."""
    tmp = tmp_path_factory.mktemp("interop")
    found = {}
    for index, rel in enumerate(SAMPLE):
        src_path = corpus / rel
        data = src_path.read_bytes()
        src = pydicom.dcmread(BytesIO(data))
        for label, settings in SETTINGS.items():
            if settings.colour_transform and src.PhotometricInterpretation != "RGB":
                continue
            o = process_file(rel, data, settings)
            if o.action != "compressed":
                continue
            out_path = tmp / f"{index}-{label.split()[-1].replace(',', '')}-{settings.colour_transform}.dcm"
            out_path.write_bytes(o.data)
            found[(rel, label)] = (src_path, src, out_path, pydicom.dcmread(BytesIO(o.data)), o)
            COLUMN[(rel, label)] = (
                label if o.verification.get("status") != "bit-exact" or settings.lossless else _LOSSLESS_COLUMN[label]
            )
    assert len(found) >= 40, "every sample file is compressed in each mode (palette: lossless only)"
    return found


@pytest.fixture(scope="module")
def orthanc():
    with Orthanc() as server:
        yield server


def _frames(ds: pydicom.Dataset) -> list[int]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return sorted({0, n - 1})


#: What another decoder's irreversible 9/7 inverse may round differently (OpenJPEG vs OpenJPH: 2).
DECODER_ROUNDING = 2


def _tolerance(o, ds: pydicom.Dataset, preview: bool) -> int:
    """0 for lossless; for lossy the recorded maximum absolute error, plus another decoder's
    rounding (scaled to 8 bits for a preview)."""
    if o.verification.get("status") != "lossy":
        return 0
    err = int(o.verification["maxAbsError"]) + DECODER_ROUNDING
    bits = int(ds.BitsStored)
    return math.ceil(err * 255 / (2**bits - 1)) + 1 if preview and bits > 8 else err


def _max_error(got: np.ndarray | None, want: np.ndarray) -> int | None:
    """Largest absolute difference, or None when the shapes differ."""
    if got is None or got.shape != want.shape:
        return None
    return int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())


def test_orthanc_stores_and_returns_first_and_last_frames(outputs, orthanc):
    stored_sources: dict[str, str] = {}
    failures = []
    for (rel, label), (src_path, src, out_path, out, o) in outputs.items():
        out_id = orthanc.store(out_path.read_bytes())
        _record("Orthanc 1.10 stores", (rel, label), True)
        colour = int(src.get("SamplesPerPixel", 1)) == 3 or src.PhotometricInterpretation == "PALETTE COLOR"
        kind = "preview" if colour else ("image-int16" if int(src.PixelRepresentation) else "image-uint16")
        if colour and rel not in stored_sources:
            stored_sources[rel] = orthanc.store(src_path.read_bytes())
        source_pixels = None if colour else pixel_array(src, as_rgb=False)
        ok, note = True, ""
        for index in _frames(src):
            try:
                got = orthanc.frame(out_id, index, kind)
            except urllib.error.HTTPError as exc:
                ok, note = False, f"HTTP {exc.code}"
                break
            if colour:  # against Orthanc's own rendering of the uncompressed source
                want = orthanc.frame(stored_sources[rel], index, kind)
            else:
                want = source_pixels if source_pixels.ndim == 2 else source_pixels[index]
            error = _max_error(got, want)
            if error is None or error > _tolerance(o, src, colour):
                ok, note = False, f"frame {index}: error {error}"
                break
        _record(
            f"Orthanc 1.10 + GDCM plugin 1.5 returns frames ({'preview' if colour else 'image-(u)int16'})",
            (rel, label),
            ok,
            ""
            if ok
            else f"{note}: GDCM cannot convert {out.PhotometricInterpretation}"
            if note.startswith("HTTP") and out.PhotometricInterpretation.startswith("YBR")
            else f"{note}: GDCM 3.0 does not decode it"
            if note.startswith("HTTP")
            else note,
        )
        if (
            out.file_meta.TransferSyntaxUID not in HTJ2K
            and not ok
            and out.PhotometricInterpretation not in ("YBR_RCT", "YBR_ICT")
        ):
            failures.append((rel, label, note))
    assert not failures, f"Orthanc did not return these frames right: {failures}"


def test_dcmdump_parses_every_output(outputs):
    failures = []
    for (rel, label), (_, _, out_path, _, _) in outputs.items():
        ok, detail = dcmdump_ok(out_path)
        _record("DCMTK 3.6.7 dcmdump parses", (rel, label), ok)
        if not ok:
            failures.append((rel, label, detail))
    assert not failures


def test_dciodvfy_adds_no_undocumented_error(outputs):
    failures = []
    for (rel, label), (src_path, _, out_path, out, _) in outputs.items():
        if out.file_meta.TransferSyntaxUID in HTJ2K:  # dicom3tools 2022 predates them: "n/a" in the table
            continue
        before, after = dciodvfy_errors(src_path), dciodvfy_errors(out_path)
        DCIODVFY_COUNTS[COLUMN[(rel, label)]][0] += len(before)
        DCIODVFY_COUNTS[COLUMN[(rel, label)]][1] += len(after)
        added = [e for e in after if e not in before]
        undocumented = [e for e in added if e not in DOCUMENTED]
        _record(
            "dciodvfy (dicom3tools 2022) adds no error",
            (rel, label),
            not undocumented,
            "; ".join(sorted(DOCUMENTED[e] for e in added if e in DOCUMENTED)),
        )
        if undocumented:
            failures.append((rel, label, undocumented))
    assert not failures


def test_opj_decompress_decodes_first_and_last_frames(outputs):
    failures = []
    for (rel, label), (_, src, _, out, o) in outputs.items():
        n = int(out.get("NumberOfFrames", 1) or 1)
        codestreams = list(generate_frames(out.PixelData, number_of_frames=n))
        source = pixel_array(src, as_rgb=False) if src.PhotometricInterpretation != "YBR_FULL_422" else None
        ok, note = True, ""
        for index in _frames(src):
            try:
                got = opj_decode(codestreams[index])
            except RuntimeError as exc:
                ok, note = False, str(exc)[:80]
                break
            want = source if n == 1 else source[index]
            error = _max_error(got, want)
            if error is None or error > _tolerance(o, src, False):
                ok, note = False, f"frame {index} differs"
                break
        _record("OpenJPEG 2.5.0 opj_decompress decodes", (rel, label), ok, note)
        if not ok:
            failures.append((rel, label, note))
    assert not failures


def test_python_gdcm_decodes_htj2k(outputs):
    from tests.helpers.consumers import gdcm_version

    version = gdcm_version()
    failures = []
    for (rel, label), (_, src, out_path, out, o) in outputs.items():
        if out.file_meta.TransferSyntaxUID not in HTJ2K:
            continue
        try:
            flat = gdcm_decode(out_path)
        except RuntimeError as exc:
            _record(f"python-gdcm {version} decodes", (rel, label), False, str(exc))
            failures.append((rel, label))
            continue
        want = pixel_array(src, as_rgb=False)
        got = flat.view(want.dtype.newbyteorder("<")).reshape(want.shape) if flat.size == want.nbytes else None
        error = _max_error(got, want)
        ok = error is not None and error <= _tolerance(o, src, False)
        _record(f"python-gdcm {version} decodes", (rel, label), ok)
        if not ok:
            failures.append((rel, label))
    assert not failures


def table() -> str:
    """The consumer x transfer syntax table, from what the tests above measured."""
    labels = list(SETTINGS)
    lines = ["| consumer | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for consumer, cells in RESULTS.items():
        row = []
        for label in labels:
            if label not in cells:
                row.append("n/a")
                continue
            passed, total, notes = cells[label]
            mark = "yes" if passed == total else ("no" if passed == 0 else "partly")
            row.append(f"{mark} {passed}/{total}" + (f" ({'; '.join(sorted(notes))})" if notes else ""))
        lines.append(f"| {consumer} | " + " | ".join(row) + " |")
    counts = ", ".join(f"{label}: {b} -> {a}" for label, (b, a) in DCIODVFY_COUNTS.items())
    lines.append("")
    lines.append(
        "Columns are the transfer syntax written (an image the quality floor wrote lossless counts as"
        " lossless). n/a: not applicable (python-gdcm is run on HTJ2K only; dicom3tools 2022 cannot read the"
        " HTJ2K transfer syntaxes; image-(u)int16 is for greyscale, preview for colour). dciodvfy `Error`"
        f" lines over the sample, sources -> outputs: {counts}."
    )
    return "\n".join(lines) + "\n"


def test_readme_table_is_the_measured_one():
    """Run last: writes build/interop-table.md and checks README "Interoperability" holds it."""
    if len(RESULTS) < 5:
        pytest.skip("the consumer tests did not all run")
    text = table()
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(text)
    readme = (ROOT / "README.md").read_text()
    assert text.strip() in readme, f"README's consumer table is not the measured one: paste {TABLE}"
