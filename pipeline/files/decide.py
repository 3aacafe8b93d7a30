"""Compress or keep: the rules, applied to a parsed header, with the reason for each outcome.

The same rules serve a file an encoder reads whole and a large object whose header the parent
reads alone (:mod:`pipeline.files.stream`), so both paths decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.codec.base import CodecLimit, FrameCodec
from pipeline.files.errors import describe_error
from pipeline.files.frames import LOSSLESS_COMPRESSED, FrameLayout

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_FLOAT_PIXELS = (0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class Keep:
    """Keep the object byte-for-byte; ``warning`` when it was expected to compress."""

    reason: str
    warning: bool = False
    #: For a DICOMDIR: the files it indexes, as (study-relative path, SOP Instance UID, transfer syntax).
    directory_refs: list[tuple[str, str | None, str | None]] | None = None


class KeepOriginal(Exception):
    """Raised by a step of the per-file path: stop, and keep the original as ``keep`` says."""

    def __init__(self, keep: Keep) -> None:
        super().__init__(keep.reason)
        self.keep = keep


def keep(reason: str, *, warning: bool = False) -> KeepOriginal:
    """``raise keep(...)``: the exception that keeps the original with this reason."""
    return KeepOriginal(Keep(reason, warning))


@dataclass(frozen=True)
class Transcode:
    """Encode ``frames`` frames stored as ``layout`` describes."""

    layout: FrameLayout
    frames: int


def is_dicomdir(ds: Any) -> bool:
    return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS


def keep_whatever_asked(ds: Any) -> Keep | None:
    """The header checks that keep an object whatever the settings: a truncated element, a
    DICOMDIR (with the files it indexes). Shared by whole files and streamed objects."""
    return keep_truncated(ds) or keep_directory(ds)


def keep_truncated(ds: Any) -> Keep | None:
    cut = truncated_element(ds)
    return Keep(f"truncated DICOM: element {cut} ends before its declared length", warning=True) if cut else None


def keep_directory(ds: Any) -> Keep | None:
    if not is_dicomdir(ds):
        return None
    try:
        refs = directory_refs(ds)
    except Exception as exc:
        return Keep(f"DICOMDIR could not be read: {describe_error(exc)}", warning=True)
    return Keep("DICOM directory (no pixel data)", directory_refs=refs)


def truncated_element(ds: Any) -> str | None:
    """The first top-level element whose bytes end before its declared length (pydicom reads on silently)."""
    from pydicom.dataelem import RawDataElement

    for elem in ds._dict.values():
        if isinstance(elem, RawDataElement) and elem.value is not None and elem.length != 0xFFFFFFFF:
            if len(elem.value) < elem.length:
                return f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return None


def directory_refs(ds: Any) -> list[tuple[str, str | None, str | None]]:
    """The files a DICOMDIR indexes, with the UID and transfer syntax it claims for each."""
    refs = []
    for rec in getattr(ds, "DirectoryRecordSequence", []) or []:
        file_id = rec.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        uid = rec.get("ReferencedSOPInstanceUIDInFile")
        ts = rec.get("ReferencedTransferSyntaxUIDInFile")
        refs.append(("/".join(str(p) for p in parts), str(uid) if uid else None, str(ts) if ts else None))
    return refs


def decide(ds: Any, codec: FrameCodec, *, transfer_syntax: str, pixel_data: bool) -> Keep | Transcode:
    """What to do with the image whose header is ``ds``. ``pixel_data``: the object has a
    (7FE0,0010) element (the caller knows; a header read alone does not hold it)."""
    from pydicom.uid import UID

    if not pixel_data:
        if any(tag in ds for tag in _FLOAT_PIXELS):
            return Keep("float pixel data: no JPEG 2000 transfer syntax holds it")
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "")) or None
        if sop_class and "Image Storage" in UID(sop_class).name:
            return Keep("image object without Pixel Data (header only, or truncated)", warning=True)
        return Keep("no pixel data")
    ts = UID(transfer_syntax)
    if not ts.is_transfer_syntax:  # .is_compressed would raise
        return Keep("malformed DICOM: its Transfer Syntax UID is not a known transfer syntax", warning=True)
    if ts == codec.transfer_syntax:
        return Keep(f"already in the asked transfer syntax ({ts.name})")
    if ts.is_compressed and ts not in LOSSLESS_COMPRESSED:
        return Keep(
            f"already lossy-compressed ({ts.name}): not re-encoded, which would add a second generation of loss"
        )
    try:
        layout = FrameLayout.of(ds, transfer_syntax)
        codec.check(layout.spec)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except CodecLimit as exc:
        return Keep(f"not re-encoded: {exc}")
    except Exception as exc:
        return Keep(f"image attributes unusable: {describe_error(exc)}", warning=True)
    if frames < 1:
        return Keep(f"image attributes unusable: Number of Frames is {frames}", warning=True)
    return Transcode(layout, frames)


def pixel_data_size_error(layout: FrameLayout, frames: int, available: int) -> str | None:
    """Why native Pixel Data of ``available`` bytes cannot hold ``frames`` frames, if it cannot."""
    needed = layout.frame_bytes * frames
    if available < needed:
        return (
            f"malformed DICOM: Pixel Data holds {available:,} bytes, but {frames} frame(s) of "
            f"{layout.rows}x{layout.columns}x{layout.samples_per_pixel} at {layout.bits_allocated} bits need {needed:,}"
        )
    return None
