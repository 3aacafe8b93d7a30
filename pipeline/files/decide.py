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


@dataclass(frozen=True)
class Transcode:
    """Encode ``frames`` frames stored as ``layout`` describes."""

    layout: FrameLayout
    frames: int


def is_dicomdir(ds: Any) -> bool:
    return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS


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
        return Keep(f"already lossy-compressed ({ts.name}): not re-encoded, which would add a second generation of loss")
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
        return (f"malformed DICOM: Pixel Data holds {available:,} bytes, but {frames} frame(s) of "
                f"{layout.rows}x{layout.columns}x{layout.samples_per_pixel} at {layout.bits_allocated} bits need {needed:,}")
    return None
