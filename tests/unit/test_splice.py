"""The byte-copying writer gives exactly what pydicom's dcmwrite gives, or steps aside."""

from __future__ import annotations

import itertools
import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

import pipeline.files.dataset as dataset_module
from pipeline.config import CompressionSettings
from pipeline.files.process import process_file
from pipeline.files.splice import LayoutError, top_level_spans

LOSSY, LOSSLESS = CompressionSettings(), CompressionSettings(mode="lossless")


def _corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file())


@pytest.mark.parametrize("settings", [LOSSY, LOSSLESS], ids=["lossy", "lossless"])
def test_same_bytes_as_dcmwrite_on_the_whole_corpus(corpus, monkeypatch, settings):
    real = dataset_module.splice_part10
    used = {"spliced": 0, "fallback": 0}

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        used["spliced" if out is not None else "fallback"] += 1
        return out

    compared = 0
    for path in _corpus_files(corpus):
        data = path.read_bytes()
        monkeypatch.setattr(dataset_module, "splice_part10", counting)
        fast = process_file(str(path), data, settings)
        monkeypatch.setattr(dataset_module, "splice_part10", lambda *a, **k: None)
        slow = process_file(str(path), data, settings)
        assert (fast.action, fast.reason) == (slow.action, slow.reason), path
        if fast.action == "compressed":
            assert fast.data == slow.data, f"{path}: spliced output differs from dcmwrite's"
            compared += 1
    assert compared > 250
    assert used["spliced"] >= 0.9 * compared, used  # the copy path is the common one, not the exception


def test_spans_cover_the_dataset_contiguously(corpus):
    """Every byte after the file meta belongs to exactly one top-level element, in order."""
    checked = 0
    for path in _corpus_files(corpus):
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except Exception:
                continue
        if ds.file_meta.get("TransferSyntaxUID") != "1.2.840.10008.1.2.1" or "PixelData" not in ds:
            continue
        try:
            spans = top_level_spans(data)
        except Exception:
            continue  # unusual layouts fall back to dcmwrite (covered above)
        assert spans[-1][2] == len(data), path
        assert all(a[2] == b[1] for a, b in itertools.pairwise(spans)), path
        assert {t for t, _, _ in spans} == {int(t) for t in ds.keys()}, path
        checked += 1
    assert checked > 100


def test_unusual_layouts_fall_back_to_dcmwrite(corpus):
    """Out-of-order elements or trailing garbage: the copy path declines, the output is still right."""
    src = next((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm")).read_bytes()
    spans = top_level_spans(src)
    (_, a0, a1), (_, b0, b1) = spans[2], spans[3]
    swapped = src[:a0] + src[b0:b1] + src[a0:a1] + src[b1:]  # two elements out of order
    garbage = src + b"\x01\x02\x03"
    for variant in (swapped, garbage):
        with pytest.raises(LayoutError):
            top_level_spans(variant)
        out = process_file("x.dcm", variant, LOSSY)
        if out.action == "compressed":  # pydicom reads it: the dcmwrite path wrote it
            ds = pydicom.dcmread(BytesIO(out.data))
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
            assert out.verification["status"] == "lossy"
