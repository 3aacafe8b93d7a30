"""The per-file decision: compress, or keep byte-for-byte and say why.

Pure function of (path, bytes, settings): it runs in worker processes and in tests alike.
"""

from __future__ import annotations

import logging
import time
import warnings
from io import BytesIO

from pipeline.codec import CodecLimit, FrameCodec, FrameSpec, codec_for
from pipeline.config import CompressionSettings
from pipeline.files.errors import describe_error
from pipeline.files.outcome import FileOutcome
from pipeline.files.verify import VerificationFailed, compare, decode_part10

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_FLOAT_PIXELS = (0x7FE00008, 0x7FE00009)
# (7FE0,0010) as it starts in little-endian bytes (explicit OB/OW, or implicit undefined length):
# seen in a file whose parsed dataset has no Pixel Data, it means the parser stopped early.
_PIXEL_DATA_HEADS = (b"\xe0\x7f\x10\x00OB", b"\xe0\x7f\x10\x00OW", b"\xe0\x7f\x10\x00\xff\xff\xff\xff")

# pydicom's warnings and log lines quote header values (names, IDs, dates): never let them out.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
logging.getLogger("pydicom").propagate = False


def _kept(path: str, data: bytes, reason: str, *, warning: bool = False, **extra: object) -> FileOutcome:
    return FileOutcome(path=path, action="kept", bytes_in=len(data), reason=reason, warning=warning, data=data, **extra)  # type: ignore[arg-type]


def is_part10(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def frame_spec(ds: object) -> FrameSpec:
    """Image attributes of ``ds`` (a pydicom Dataset); raises KeyError/ValueError when absent."""
    return FrameSpec(
        rows=int(ds.Rows),  # type: ignore[attr-defined]
        columns=int(ds.Columns),  # type: ignore[attr-defined]
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),  # type: ignore[attr-defined]
        bits_allocated=int(ds.BitsAllocated),  # type: ignore[attr-defined]
        bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),  # type: ignore[attr-defined]
        signed=int(ds.get("PixelRepresentation", 0)) == 1,  # type: ignore[attr-defined]
        photometric=str(ds.PhotometricInterpretation).strip(),  # type: ignore[attr-defined]
    )


def truncated_element(ds: object) -> str | None:
    """The first top-level element whose bytes end before its declared length (pydicom reads on silently)."""
    from pydicom.dataelem import RawDataElement

    for elem in ds._dict.values():  # type: ignore[attr-defined]
        if isinstance(elem, RawDataElement) and elem.value is not None and elem.length != 0xFFFFFFFF:
            if len(elem.value) < elem.length:
                return f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return None


def directory_refs(ds: object) -> list[tuple[str, str | None, str | None]]:
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


def load_libraries(codec: FrameCodec) -> None:
    """Import everything :func:`process_file` needs, once, in the process that forks the workers."""
    import pydicom.pixels  # noqa: F401

    import pipeline.files.dataset  # noqa: F401  (pydicom's writer and encapsulation with it)

    codec.load()


def process_file(
    path: str, data: bytes, settings: CompressionSettings, codec: FrameCodec | None = None
) -> FileOutcome:
    """Decide and do what happens to one file. Never raises for bad input: it is kept instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _process(path, data, settings, codec or codec_for(settings))


def _process(path: str, data: bytes, settings: CompressionSettings, codec: FrameCodec) -> FileOutcome:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    if not data:
        return _kept(path, data, "empty file")
    if not is_part10(data):
        return _kept(path, data, "not a DICOM Part 10 file (no 'DICM' prefix)")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        ds = dcmread(BytesIO(data))
        ts_in = str(ds.file_meta.get("TransferSyntaxUID", "")) or None
        sop_uid = str(ds.get("SOPInstanceUID", "")) or None
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "")) or None
    except Exception as exc:  # pydicom raises many types for broken files
        return _kept(path, data, f"unreadable DICOM: {describe_error(exc)}", warning=True)
    base = {"transfer_syntax_in": ts_in, "transfer_syntax_out": ts_in, "sop_instance_uid_in": sop_uid}
    cut = truncated_element(ds)
    if cut:
        return _kept(path, data, f"truncated DICOM: element {cut} ends before its declared length", warning=True, **base)
    if ts_in is None:
        return _kept(path, data, "malformed DICOM: no Transfer Syntax UID in the file meta", warning=True, **base)
    from pydicom.uid import UID

    if sop_class == DICOMDIR_SOP_CLASS:
        try:
            refs = directory_refs(ds)
        except Exception as exc:
            return _kept(path, data, f"DICOMDIR could not be read: {describe_error(exc)}", warning=True, **base)
        return _kept(path, data, "DICOM directory (no pixel data)", directory_refs=refs, **base)
    if "PixelData" not in ds:
        if any(head in data for head in _PIXEL_DATA_HEADS):
            return _kept(path, data, "malformed DICOM: its Pixel Data element could not be parsed", warning=True, **base)
        if any(tag in ds for tag in _FLOAT_PIXELS):
            return _kept(path, data, "float pixel data: no JPEG 2000 transfer syntax holds it", **base)
        if sop_class and "Image Storage" in UID(sop_class).name:
            return _kept(path, data, "image object without Pixel Data (header only, or truncated)", warning=True, **base)
        return _kept(path, data, "no pixel data", **base)
    if not UID(ts_in).is_transfer_syntax:  # .is_compressed would raise
        return _kept(path, data, "malformed DICOM: its Transfer Syntax UID is not a known transfer syntax", warning=True, **base)
    if UID(ts_in).is_compressed:
        return _kept(path, data, f"already compressed ({UID(ts_in).name})", **base)

    try:
        spec = frame_spec(ds)
        codec.check(spec)
    except CodecLimit as exc:
        return _kept(path, data, f"not re-encoded: {exc}", **base)
    except Exception as exc:
        return _kept(path, data, f"image attributes unusable: {describe_error(exc)}", warning=True, **base)

    from pipeline.files.dataset import has_unknown_vr, swap_big_endian_words, write_encapsulated

    if not ds.original_encoding[1]:  # big endian source
        try:  # both parse every element: a broken one (an unknown VR...) raises here
            if has_unknown_vr(ds):
                return _kept(path, data, "big-endian file with UN elements: their byte order cannot be converted", **base)
            swap_big_endian_words(ds)
        except Exception as exc:
            return _kept(path, data, f"malformed DICOM: an element could not be read: {describe_error(exc)}", warning=True, **base)

    try:
        source = pixel_array(ds, as_rgb=False)
    except Exception as exc:
        return _kept(path, data, f"pixel data unreadable: {describe_error(exc)}", warning=True, **base)
    frames_arr = source if int(ds.get("NumberOfFrames", 1) or 1) > 1 else source[None]
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    try:
        frames = [codec.encode(frame, spec) for frame in frames_arr]
        pixel_in = frames_arr.size * (spec.bits_allocated // 8)
        pixel_out = sum(len(f) for f in frames)
        out = write_encapsulated(
            ds,
            frames,
            codec,
            photometric=codec.output_photometric(spec),
            ratio=pixel_in / pixel_out,
            settings_fingerprint=settings.fingerprint(),
            source=data,
        )
    except Exception as exc:
        return _kept(path, data, f"encoding failed: {describe_error(exc)}", warning=True, **base)
    timings["encode"] = time.perf_counter() - t1

    verification = {"status": "skipped"}
    if settings.verify:
        t2 = time.perf_counter()
        try:
            verification = compare(source, decode_part10(out, codec), bits_stored=spec.bits_stored, lossless=not codec.lossy)
        except VerificationFailed as exc:
            return _kept(path, data, f"verification failed, original kept: {exc}", warning=True, **base)
        except Exception as exc:
            return _kept(path, data, f"verification could not decode the output, original kept: {describe_error(exc)}", warning=True, **base)
        timings["verify"] = time.perf_counter() - t2

    return FileOutcome(
        path=path,
        action="compressed",
        bytes_in=len(data),
        bytes_out=len(out),
        data=out,
        transfer_syntax_in=ts_in,
        transfer_syntax_out=codec.transfer_syntax,
        sop_instance_uid_in=sop_uid,
        sop_instance_uid_out=str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None,
        frames=len(frames),
        pixel_bytes_in=pixel_in,
        pixel_bytes_out=pixel_out,
        verification=verification,
        seconds=timings,
    )
