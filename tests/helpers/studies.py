"""Real studies for the tests: copied from the corpus or the fixture, their files as bytes, their
manifests, the entries of the ZIP made of them, and a clean reference run through the local API.

Nothing here mocks the pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom

#: The fixture study's files in the order a viewer must read them (natural, per component).
FIXTURE_ORDER = [
    "CT1/01.dcm",
    "CT1/02.dcm",
    "CT1/03.dcm",
    "CT1/04.dcm",
    "CT2/I10",
    "CT2/I20",
    "CT2/I30",
    "CT2/I40",
    "CT2/I50",
    "CT2/I100",
    "report/test-SR.dcm",
]

#: Small real MR/CR slices (16x16) from the corpus, copied under names whose natural order
#: differs from their byte order ("IM2" < "IM10"), in nested folders.
SMALL_STUDY = {
    "MR1/IM10": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/5641",
    "MR1/IM2": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/15820",
    "MR1/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR1/4919",
    "MR10/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR2/6273",
    "MR9/IM1": "edge-cases/dicomdir-tree/dicomdirtests/98892003/MR700/4528",
}
SMALL_ORDER = ["MR1/IM1", "MR1/IM2", "MR1/IM10", "MR9/IM1", "MR10/IM1"]


def make_small_study(corpus: Path, dest: Path, names: Iterable[str] | None = None) -> Path:
    """Copy (some of) :data:`SMALL_STUDY` from the corpus into ``dest``."""
    for name in names or SMALL_STUDY:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / SMALL_STUDY[name], target)
        target.chmod(0o644)
    return dest


def ct_slices(corpus: Path) -> list[Path]:
    """The corpus' 512x512 uncompressed CT slices (real patient-free CT, ~514 KiB each)."""
    with open(corpus / "MANIFEST.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = [
        corpus / r["file"]
        for r in rows
        if r["category"] == "ct-series"
        and r["rows"] == "512"
        and r["cols"] == "512"
        and r["transfer_syntax"] == "Explicit VR Little Endian"
    ]
    assert len(out) >= 60, "the corpus should hold at least 60 512x512 CT slices"
    return sorted(out)


def make_ct_study(corpus: Path, dest: Path, n: int, *, folder: str = "CT") -> Path:
    """``n`` real CT slices (cycling through the corpus) as ``dest/folder/IM1 .. IMn`` (natural order)."""
    slices = ct_slices(corpus)
    (dest / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = dest / folder / f"IM{i + 1}"
        shutil.copyfile(slices[i % len(slices)], target)
        target.chmod(0o644)
    return dest


def copy_study(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def study_files(root: Path) -> dict[str, bytes]:
    """Relative POSIX path -> bytes, for every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_for(files: dict[str, bytes], **options: Any) -> bytes:
    """A ``manifest.json`` listing ``files`` (path, size, sha256), with ``options`` as its other fields."""
    doc = {**options, "files": [{"path": p, "size": len(d), "sha256": sha256(d)} for p, d in files.items()]}
    return json.dumps(doc).encode()


def natural_order(paths: Iterable[str]) -> list[str]:
    """An independent natural sort (per path component, digit runs by value)."""

    def key(path: str) -> list[list[tuple[int, Any]]]:
        return [
            [(0, int(c)) if c.isdigit() else (1, c.casefold()) for c in re.split(r"(\d+)", comp) if c]
            for comp in path.split("/")
        ]

    return sorted(paths, key=key)


def zip_entries(data: bytes) -> list[str]:
    """The entry names of a ZIP, in order (after checking every entry's CRC)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return [i.filename for i in zf.infolist()]


def phi_values(root: Path) -> set[str]:
    """Identifying header values of the DICOM files under ``root`` (long enough to be specific)."""
    values: set[str] = set()
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        for kw in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "InstitutionName",
            "AccessionNumber",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "ReferringPhysicianName",
        ):
            v = ds.get(kw)
            if v is not None and len(str(v)) >= 4:
                values.add(str(v))
    return values


def local_reference(study_dir: Path, settings: Any, *, workers: int = 2) -> tuple[bytes, list[dict[str, Any]]]:
    """A clean run of ``study_dir`` through the local-folder API: (ZIP bytes, the record's ``files``)."""
    from pipeline.engine import Study, compress_study
    from pipeline.outputs.record import build_record
    from pipeline.study.source import LocalStudySource

    buf = io.BytesIO()

    class Sink:
        def write(self, data: bytes) -> int:
            return buf.write(data)

    run = compress_study(Study.from_source(LocalStudySource(study_dir)), Sink(), settings, encoders=workers)
    record = build_record(run, output={})
    return buf.getvalue(), record["files"]
