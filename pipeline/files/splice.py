"""Write the output by copying every untouched element's bytes from the source.

pydicom's ``dcmwrite`` re-serialises all ~100 elements of a slice one by one, which costs more
than decoding the lossy result for verification. When source and output are both Explicit VR
Little Endian (the usual uncompressed file), an untouched element's encoding is the same in
both, so its bytes can be copied as they are: only the file meta and the elements we changed
go through pydicom's writer. Anything unusual about the source layout (unsorted or duplicate
tags, UN of undefined length, a parse that disagrees with pydicom's) returns ``None`` and the
caller falls back to ``dcmwrite``. Verification re-parses whatever is written either way.
"""

from __future__ import annotations

import struct

from pydicom.dataset import FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_HEAD = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")


class LayoutError(Exception):
    """The source is not laid out the way a byte copy needs."""


def _element_end(buf: bytes, pos: int) -> tuple[int, int]:
    """(tag, end offset) of the explicit VR little endian element starting at ``pos``."""
    if pos + 8 > len(buf):
        raise LayoutError("truncated element header")
    group, elem, vr, short_len = _HEAD.unpack_from(buf, pos)
    tag = group << 16 | elem
    if tag in (_ITEM, _ITEM_END, _SEQ_END):
        raise LayoutError("delimiter where an element was expected")
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise LayoutError("truncated element header")
        length, start = _U32.unpack_from(buf, pos + 8)[0], pos + 12
    elif vr.isalpha() and vr.isupper():
        length, start = short_len, pos + 8
    else:
        raise LayoutError("not explicit VR")
    if length != _UNDEFINED:
        end = start + length
    elif vr == b"SQ":
        end = _sequence_end(buf, start)
    else:  # UN (implicit VR inside) or encapsulated pixel data: not in an uncompressed source
        raise LayoutError("undefined length outside a sequence")
    if end > len(buf):
        raise LayoutError("element runs past the end of the file")
    return tag, end


def _sequence_end(buf: bytes, pos: int) -> int:
    """Offset just past the delimiter of an undefined-length sequence whose items start at ``pos``."""
    while True:
        if pos + 8 > len(buf):
            raise LayoutError("unterminated sequence")
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag, length = group << 16 | elem, _U32.unpack_from(buf, pos + 4)[0]
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM:
            raise LayoutError("sequence holds something other than items")
        pos += 8
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: elements until the item delimiter
            if pos + 8 > len(buf):
                raise LayoutError("unterminated item")
            group, elem = struct.unpack_from("<HH", buf, pos)
            if group << 16 | elem == _ITEM_END:
                pos += 8
                break
            pos = _element_end(buf, pos)[1]


def top_level_spans(source: bytes) -> list[tuple[int, int, int]]:
    """(tag, start, end) of every element after the file meta, in file order."""
    pos = 132
    spans: list[tuple[int, int, int]] = []
    while pos < len(source):
        tag, end = _element_end(source, pos)
        if tag >> 16 != 0x0002:
            if spans and tag <= spans[-1][0]:
                raise LayoutError("elements out of order")
            spans.append((tag, pos, end))
        elif spans:
            raise LayoutError("file meta element after the dataset started")
        pos = end
    return spans


def splice_part10(ds: FileDataset, source: bytes, source_syntax: str, changed: set[int]) -> bytes | None:
    """Part 10 bytes of ``ds``, where every element outside ``changed`` is ``source``'s own bytes.

    ``changed`` are the dataset tags the caller set (or removed); ``ds.file_meta`` is written
    anew as ``dcmwrite`` would. ``None`` when the source does not allow a byte copy."""
    if source_syntax != ExplicitVRLittleEndian or ds.original_encoding != (False, True):
        return None
    try:
        spans = top_level_spans(source)
    except LayoutError:
        return None
    source_tags = {tag for tag, _, _ in spans}
    present = {int(tag) for tag in ds.keys()}
    # The byte walk must see exactly the elements pydicom saw, apart from the ones we changed.
    if present - changed != source_tags - changed:
        return None

    meta = ds.file_meta
    # What dcmwrite(enforce_file_format=True) does to the file meta, on the dataset's behalf.
    if "SOPClassUID" in ds and meta.get("MediaStorageSOPClassUID") != ds.SOPClassUID:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds and meta.get("MediaStorageSOPInstanceUID") != ds.SOPInstanceUID:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(source[:128])
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    encodings = ds._character_set
    pending = sorted(tag for tag in changed if tag in present and tag & 0xFFFF)
    run_start = run_end = -1

    def flush() -> None:
        nonlocal run_start, run_end
        if run_start >= 0:
            out.write(source[run_start:run_end])
        run_start = run_end = -1

    for tag, start, end in spans:
        if tag & 0xFFFF == 0:  # retired group lengths: dcmwrite drops them, and ours would be stale
            flush()
            continue
        while pending and pending[0] < tag:
            flush()
            write_data_element(out, ds[pending.pop(0)], encodings)
        if tag in changed:
            flush()
            if pending and pending[0] == tag:
                write_data_element(out, ds[pending.pop(0)], encodings)
            continue  # changed and gone from ds: removed
        if run_start < 0:
            run_start = start
        run_end = end
    flush()
    for tag in pending:
        write_data_element(out, ds[tag], encodings)
    return out.getvalue()
