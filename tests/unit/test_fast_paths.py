"""The pieces added for speed and flat memory still give the right answers (behaviour, not timing).

The S3 ones (in-process moto) are in tests/integration/test_fast_paths_s3.py."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from pipeline.codec.htj2k import HTJ2KCodec, search_step
from pipeline.codec.j2k import J2KCodec
from pipeline.files.verify import VerificationFailed, compare
from tests.helpers.paths import ROOT


@pytest.fixture(scope="module")
def ct_slices(corpus: Path) -> list[tuple[np.ndarray, int]]:
    paths = sorted((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm"))[:12]
    out = []
    for p in paths:
        ds = pydicom.dcmread(p)
        out.append((pixel_array(ds, as_rgb=False), int(ds.BitsStored)))
    return out


def _reference_metrics(src: np.ndarray, dec: np.ndarray, bits: int) -> tuple[int, float, float]:
    """The textbook computation, in Python integers: max error, MSE, PSNR."""
    diffs = [int(a) - int(b) for a, b in zip(src.ravel().tolist(), dec.ravel().tolist(), strict=True)]
    mse = sum(d * d for d in diffs) / len(diffs)
    peak = 2**bits - 1
    return max(abs(d) for d in diffs), mse, 10 * math.log10(peak * peak / mse)


def test_lossy_metrics_match_the_textbook_computation(ct_slices):
    codec = J2KCodec(100)
    for src, bits in ct_slices[:3]:
        dec = codec.decode(codec.encode(src, _spec(src, bits)))
        got = compare(src, dec, bits_stored=bits, lossless=False)
        max_err, mse, psnr = _reference_metrics(src, dec, bits)
        assert got["status"] == "lossy"
        assert got["maxAbsError"] == max_err > 0
        assert got["rmse"] == round(math.sqrt(mse), 3)
        assert got["psnrDb"] == round(psnr, 2)


def test_lossless_compare_is_exact_and_counts_differences(ct_slices):
    src, bits = ct_slices[0]
    codec = J2KCodec(None)
    dec = codec.decode(codec.encode(src, _spec(src, bits)))
    assert compare(src, dec, bits_stored=bits, lossless=True) == {"status": "bit-exact"}
    changed = dec.copy()
    changed.flat[[5, 1000, 70000]] += 1
    with pytest.raises(VerificationFailed, match="differs from the source in 3 samples"):
        compare(src, changed, bits_stored=bits, lossless=True)
    # Same values in another dtype are still the same image.
    assert compare(src, dec.astype(np.int32), bits_stored=bits, lossless=True) == {"status": "bit-exact"}


def test_compare_handles_full_16_bit_unsigned_range():
    """Differences of 65535 and squares near 2**32 must neither wrap nor overflow."""
    src = np.zeros((64, 64), dtype=np.uint16)
    dec = src.copy()
    src[0, 0], dec[1, 1] = 65535, 65535
    got = compare(src, dec, bits_stored=16, lossless=False)
    assert got["maxAbsError"] == 65535
    assert got["rmse"] == round(math.sqrt(2 * 65535**2 / src.size), 3)


def _spec(arr: np.ndarray, bits: int):
    from pipeline.codec.base import FrameSpec

    return FrameSpec(
        rows=arr.shape[0],
        columns=arr.shape[1],
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=bits,
        signed=arr.dtype.kind == "i",
        photometric="MONOCHROME2",
    )


@pytest.mark.parametrize("target", [20.0, 100.0])
def test_htj2k_step_search_lands_near_the_ratio_in_few_encodes(ct_slices, target):
    import imagecodecs

    counts = []
    for src, _ in ct_slices:
        calls = []

        def encode(step: float, src=src, calls=calls) -> bytes:
            calls.append(step)
            return bytes(imagecodecs.htj2k_encode(src, level=step, reversible=False))

        out = search_step(encode, raw_bytes=src.size * 2, target=target)
        ratio = src.size * 2 / len(out)
        assert abs(math.log(ratio / target)) < math.log1p(0.08), (ratio, target)
        assert len(set(calls)) == len(calls), "no step is encoded twice"
        counts.append(len(calls))
    assert max(counts) <= 5 and sum(counts) / len(counts) <= 3.5, counts


def test_htj2k_output_does_not_depend_on_what_was_encoded_before(ct_slices):
    """Each file's bytes depend on that file only, so 1 and N workers write the same ZIP."""
    codec = HTJ2KCodec(100)
    first = [codec.encode(src, _spec(src, bits)) for src, bits in ct_slices[:4]]
    again = [codec.encode(src, _spec(src, bits)) for src, bits in reversed(ct_slices[:4])]
    assert first == list(reversed(again))


def test_htj2k_search_gives_up_cleanly_when_the_ratio_cannot_be_reached(ct_slices):
    import imagecodecs

    src, _ = ct_slices[0]
    calls = []

    def encode(step: float) -> bytes:
        calls.append(step)
        return bytes(imagecodecs.htj2k_encode(src, level=step, reversible=False))

    out = search_step(encode, raw_bytes=src.size * 2, target=1e7)  # beyond any step
    assert out and len(calls) <= 8


@pytest.fixture(scope="module")
def varied_images(corpus: Path, manifest: list[dict[str, str]]) -> list[tuple[str, np.ndarray]]:
    """Up to 3 single-frame grey images of each kind in the corpus (MR 64x64 to CR 1760x1760,
    8 and 16 bits, big and little endian), beyond the CT slices the search was first tuned on."""
    from pydicom.uid import UID

    seen: dict[tuple[str, ...], int] = {}
    out = []
    for r in manifest:
        if not (
            r["dicom"] == "yes"
            and r["has_pixel_data"] == "yes"
            and r["frames"] == "1"
            and r["samples_per_pixel"] == "1"
            and r["decode_check"].startswith("ok")
            and int(r["rows"]) >= 32
            and int(r["cols"]) >= 32
            and not UID(r["transfer_syntax_uid"]).is_compressed
        ):
            continue
        kind = (r["category"], r["modality"], r["rows"], r["cols"], r["bits_allocated"])
        if seen.get(kind, 0) < 3:
            seen[kind] = seen.get(kind, 0) + 1
            out.append(
                (r["file"], np.ascontiguousarray(pixel_array(pydicom.dcmread(corpus / r["file"]), as_rgb=False)))
            )
    assert len(out) >= 20
    return out


@pytest.mark.parametrize("target", [20.0, 100.0])
def test_htj2k_search_on_varied_images_lands_near_the_ratio_or_stops_where_it_cannot_move(varied_images, target):
    """Within 8 %, or the ratio cannot be reached (at the largest step it is still short) and the
    search stopped early, near what is reachable. Small images whose headers outweigh their pixels
    (64x64 MR) cannot reach 100:1."""
    import imagecodecs

    from pipeline.codec.htj2k import _STEP_RANGE

    counts = []
    for name, src in varied_images:
        calls: list[float] = []

        def encode(step: float, src=src, calls=calls) -> bytes:
            calls.append(step)
            return bytes(imagecodecs.htj2k_encode(src, level=step, reversible=False))

        ratio = src.nbytes / len(search_step(encode, raw_bytes=src.nbytes, target=target))
        counts.append(len(calls))
        if abs(math.log(ratio / target)) < math.log1p(0.08):
            continue
        top = src.nbytes / len(imagecodecs.htj2k_encode(src, level=_STEP_RANGE[1], reversible=False))
        assert top < target / 1.08, (name, ratio, top)  # really out of reach...
        assert ratio > top / 1.25, (name, ratio, top)  # ...and we got near the most there is
        assert len(calls) <= 4, (name, calls)  # without walking the whole step range
    assert sum(counts) / len(counts) <= 4.0, counts


def test_workers_are_forked_with_the_codec_libraries_already_imported(tmp_path, corpus):
    """load_libraries runs in the parent: imported once, shared by every worker it forks."""
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline.config import CompressionSettings
        from pipeline.files.encoders import process_files
        assert "openjpeg" not in sys.modules and "pydicom.pixels" not in sys.modules
        data = open({str(next((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm")))!r}, "rb").read()
        out = list(process_files(iter([("a.dcm", data)]), CompressionSettings(), encoders=1))
        assert out[0].action == "compressed", out[0].reason
        print("openjpeg" in sys.modules, "pydicom.pixels" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_handler_import_stays_free_of_codec_libraries():
    code = "import sys, handlers.worker; print(sorted(m for m in ('openjpeg', 'imagecodecs', 'pydicom.pixels', 'numpy') if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "x"},
    )
    assert proc.returncode == 0, proc.stderr
    # numpy too: the engine and its codecs are imported by the first study, not by the handler.
    assert proc.stdout.split() == ["[]"], proc.stdout


def test_allocator_bounds_apply_on_glibc_and_can_be_turned_off():
    code = textwrap.dedent(
        """
        import os
        from pipeline.allocator import bound_allocator, encoder_allocator
        print(bound_allocator(), bound_allocator(), encoder_allocator())
        """
    )
    env = dict(__import__("os").environ)
    on = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    off = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "DICOM_MALLOC_DEFAULTS": "1"},
        timeout=60,
    )
    assert on.stdout.split() == ["True", "True", "True"], on.stderr  # this machine runs glibc, as Lambda does
    assert off.stdout.split() == ["False", "False", "False"], off.stderr


def test_encoder_allocator_reuses_file_sized_buffers_instead_of_faulting_them_in():
    """The parent's policy maps every >256 KiB buffer afresh (page faults each time); an encoder's
    policy keeps them in the heap. 200 one-megabyte buffers, allocated, written and freed in turn."""
    code = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        from pipeline.allocator import bound_allocator, encoder_allocator
        assert bound_allocator()
        if sys.argv[1] == "encoder":
            assert encoder_allocator()
        np.ones(1 << 18, np.int32)  # first use: the heap grows once
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(200):
            np.ones(1 << 18, np.int32)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """
    )
    faults = {}
    for policy in ("parent", "encoder"):
        proc = subprocess.run(
            [sys.executable, "-c", code, policy], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        faults[policy] = int(proc.stdout)
    assert faults["parent"] > 200 * 100, faults  # 256 pages of 4 KiB per buffer, every time
    assert faults["encoder"] < 2_000, faults


def test_records_are_encoded_exactly_as_json_dumps_would():
    import json

    from pipeline.outputs.s3 import json_bytes

    doc = {
        "study": {"name": "étude 1", "files": [{"path": f"CT/{i}.dcm", "ratio": i / 3, "ok": None} for i in range(50)]},
        "empty": {},
        "list": [],
        "nested": [[1, 2], {"a": [True, False]}],
    }
    assert json_bytes(doc) == (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
