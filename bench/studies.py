"""Reference studies built at bench time from the corpus CT slices (never committed).

Each copy gets new Study/Series/SOP Instance UIDs and an InstanceNumber; pixel data is untouched.
UIDs are derived from the copy's position, so a rebuilt study is byte-identical.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def corpus_slices(corpus: Path) -> list[Path]:
    ge = sorted((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm"))
    philips = sorted(
        p for p in (corpus / "ct-series/philips-ingenuity-phantom-study/S21610/S2010").iterdir() if p.name != "DIRFILE"
    )
    return ge + philips


def build_study(dest: Path, corpus: Path, *, slices: int, series: int = 1) -> Path:
    """``slices`` per series in ``CT1/``... (or flat when ``series == 1``) under ``dest``."""
    stamp = dest / ".complete"
    if stamp.exists():
        return dest
    sources = corpus_slices(corpus)
    study_uid = generate_uid(entropy_srcs=["bench", dest.name])
    for s in range(series):
        folder = dest / f"CT{s + 1}" if series > 1 else dest
        folder.mkdir(parents=True, exist_ok=True)
        series_uid = generate_uid(entropy_srcs=["bench", dest.name, str(s)])
        for i, src in zip(range(slices), itertools.cycle(sources)):
            ds = pydicom.dcmread(src)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench", dest.name, str(s), str(i)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            ds.SeriesNumber = s + 1
            ds.save_as(folder / f"DCT{i:04d}.dcm")
    stamp.touch()
    return dest


def study_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm"))


def study_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in study_files(root))
