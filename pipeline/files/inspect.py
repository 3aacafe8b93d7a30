"""The first step of the per-file path: is it DICOM, can it be parsed, what does it claim to be.

A file that fails here is kept byte-for-byte with the reason (:class:`KeepOriginal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pipeline.files.decide import KeepOriginal, keep, keep_directory, keep_truncated
from pipeline.files.errors import describe_error

# (7FE0,0010) as it starts in little-endian bytes (explicit OB/OW, or implicit undefined length):
# seen in a file whose parsed dataset has no Pixel Data, it means the parser stopped early.
_PIXEL_DATA_HEADS = (b"\xe0\x7f\x10\x00OB", b"\xe0\x7f\x10\x00OW", b"\xe0\x7f\x10\x00\xff\xff\xff\xff")


@dataclass(frozen=True)
class Parsed:
    """A parsed file: its dataset and the identity fields its outcome reports."""

    ds: Any
    transfer_syntax: str | None = None
    sop_instance_uid: str | None = None

    @property
    def has_pixel_data(self) -> bool:
        return "PixelData" in self.ds


def is_part10(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse(data: bytes) -> Parsed:
    """Parse a whole file; raises :class:`KeepOriginal` for what is not an image to consider."""
    from pydicom import dcmread

    if not data:
        raise keep("empty file")
    if not is_part10(data):
        raise keep("not a DICOM Part 10 file (no 'DICM' prefix)")
    try:
        ds = dcmread(BytesIO(data))
        ts_in = str(ds.file_meta.get("TransferSyntaxUID", "")) or None
        sop_uid = str(ds.get("SOPInstanceUID", "")) or None
    except Exception as exc:  # pydicom raises many types for broken files
        raise keep(f"unreadable DICOM: {describe_error(exc)}", warning=True) from exc
    return Parsed(ds, ts_in, sop_uid)


def check(parsed: Parsed, data: bytes) -> None:
    """Header checks before any decision; raises :class:`KeepOriginal` (identity known by now)."""
    kept = keep_truncated(parsed.ds)
    if kept:
        raise KeepOriginal(kept)
    if parsed.transfer_syntax is None:
        raise keep("malformed DICOM: no Transfer Syntax UID in the file meta", warning=True)
    kept = keep_directory(parsed.ds)
    if kept:
        raise KeepOriginal(kept)
    if not parsed.has_pixel_data and any(head in data for head in _PIXEL_DATA_HEADS):
        raise keep("malformed DICOM: its Pixel Data element could not be parsed", warning=True)
