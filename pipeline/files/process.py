"""The per-file decision: compress, or keep byte-for-byte and say why.

Pure function of (path, bytes, settings): it runs in encoder processes and in tests alike.
"""

from __future__ import annotations

import logging
import time
import warnings
from io import BytesIO

from pipeline.codec import FrameCodec, codec_for
from pipeline.config import CompressionSettings
from pipeline.files.decide import Keep, decide, is_dicomdir, pixel_data_size_error
from pipeline.files.errors import describe_error
from pipeline.files.frames import FrameError, FrameLayout, FrameResult, FrameStats, encode_frame, extended_offsets
from pipeline.files.outcome import FileOutcome
from pipeline.files.verify import VerificationFailed, floor_entry, summarise

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
    """Import everything :func:`process_file` needs, once, in the process that forks the encoders."""
    import pydicom.pixels  # noqa: F401

    import pipeline.files.dataset  # noqa: F401  (pydicom's writer and encapsulation with it)
    from pipeline.gdcm_on_demand import register

    register()  # GDCM itself waits for the first frame that needs it

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
    except Exception as exc:  # pydicom raises many types for broken files
        return _kept(path, data, f"unreadable DICOM: {describe_error(exc)}", warning=True)
    base = {"transfer_syntax_in": ts_in, "transfer_syntax_out": ts_in, "sop_instance_uid_in": sop_uid}
    cut = truncated_element(ds)
    if cut:
        return _kept(path, data, f"truncated DICOM: element {cut} ends before its declared length", warning=True, **base)
    if ts_in is None:
        return _kept(path, data, "malformed DICOM: no Transfer Syntax UID in the file meta", warning=True, **base)
    if is_dicomdir(ds):
        try:
            refs = directory_refs(ds)
        except Exception as exc:
            return _kept(path, data, f"DICOMDIR could not be read: {describe_error(exc)}", warning=True, **base)
        return _kept(path, data, "DICOM directory (no pixel data)", directory_refs=refs, **base)
    if "PixelData" not in ds and any(head in data for head in _PIXEL_DATA_HEADS):
        return _kept(path, data, "malformed DICOM: its Pixel Data element could not be parsed", warning=True, **base)
    decision = decide(ds, codec, transfer_syntax=ts_in, pixel_data="PixelData" in ds)
    if isinstance(decision, Keep):
        return _kept(path, data, decision.reason, warning=decision.warning, **base)

    from pipeline.files.dataset import has_unknown_vr, swap_big_endian_words, write_encapsulated

    if not ds.original_encoding[1]:  # big endian source
        try:  # both parse every element: a broken one (an unknown VR...) raises here
            if has_unknown_vr(ds):
                return _kept(path, data, "big-endian file with UN elements: their byte order cannot be converted", **base)
            swap_big_endian_words(ds)
        except Exception as exc:
            return _kept(path, data, f"malformed DICOM: an element could not be read: {describe_error(exc)}", warning=True, **base)

    layout, nframes = decision.layout, decision.frames
    try:
        stored = stored_frames(ds, layout, nframes)
    except FrameError as exc:
        return _kept(path, data, str(exc), warning=True, **base)
    except Exception as exc:
        return _kept(path, data, f"pixel data unreadable: {describe_error(exc)}", warning=True, **base)
    timings["read"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    results = []
    for index, frame in enumerate(stored):
        result = encode_frame(index, frame, layout, codec, verify=settings.verify, floor=settings.floor)
        if result.failed:
            return _kept(path, data, result.reason(nframes), warning=True, **base)
        results.append(result)
    del stored
    codestreams = [r.codestream for r in results]
    pixel_in = layout.frame_bytes * nframes
    pixel_out = sum(len(c) for c in codestreams)
    stats = sum_stats(results)
    codec = output_codec(codec, stats, nframes)
    try:
        out = write_encapsulated(
            ds,
            codestreams,
            codec,
            photometric=codec.output_photometric(layout.spec),
            ratio=pixel_in / pixel_out,
            settings_fingerprint=settings.fingerprint(),
            source=data,
            uid_root=settings.uid_root,
        )
    except Exception as exc:
        return _kept(path, data, f"encoding failed: {describe_error(exc)}", warning=True, **base)
    timings["encode"] = time.perf_counter() - t1

    verification: dict[str, object] = {"status": "skipped"}
    if settings.verify:
        t2 = time.perf_counter()
        try:
            check_container(out, codestreams, layout)
            verification = summarise(stats, bits_stored=layout.bits_stored, lossless=not codec.lossy)
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
        frames=nframes,
        pixel_bytes_in=pixel_in,
        pixel_bytes_out=pixel_out,
        verification=verification,
        floor=floor_entry(stats, settings, frames=nframes, ratio=pixel_in / pixel_out),
        seconds=timings,
    )


def output_codec(codec: FrameCodec, stats: FrameStats, frames: int) -> FrameCodec:
    """The codec the output is labelled with: lossless when the quality floor encoded every frame
    lossless (a lossless image keeps its UID and gets no lossy attributes)."""
    return codec.lossless_twin() if codec.lossy and stats.lossless_frames == frames else codec


def stored_frames(ds: object, layout: FrameLayout, frames: int) -> list[memoryview] | list[bytes]:
    """Each frame's stored bytes, without copying native pixel data."""
    from pydicom.encaps import generate_frames

    value = ds.PixelData  # type: ignore[attr-defined]
    if not layout.encapsulated:
        error = pixel_data_size_error(layout, frames, len(value))
        if error:
            raise FrameError(error)
        view, size = memoryview(value), layout.frame_bytes
        return [view[i * size : (i + 1) * size] for i in range(frames)]
    found = list(generate_frames(value, number_of_frames=frames, extended_offsets=extended_offsets(ds)))
    if len(found) < frames:
        raise FrameError(f"malformed DICOM: {len(found)} encapsulated frame(s), Number of Frames says {frames}")
    return found[:frames]


def sum_stats(results: list[FrameResult]) -> FrameStats:
    total = FrameStats()
    for r in results:
        if r.stats is not None:
            total.add(r.stats)
    return total


def check_container(out: bytes, codestreams: list[bytes], layout: FrameLayout) -> None:
    """Read the written file back from its bytes: its header describes the image we encoded and
    its encapsulated frames are exactly the codestreams that were decoded and compared."""
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    ds = dcmread(BytesIO(out))
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if (int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))) != (layout.rows, layout.columns, layout.samples_per_pixel):
        raise VerificationFailed("the written header does not describe the encoded image")
    found = list(generate_frames(ds.PixelData, number_of_frames=nframes, extended_offsets=extended_offsets(ds)))
    if len(found) != nframes or nframes != len(codestreams):
        raise VerificationFailed(f"{len(found)} encapsulated frames, Number of Frames says {nframes}")
    for written, encoded in zip(found, codestreams):
        if written[: len(encoded)] != encoded or len(written) - len(encoded) not in (0, 1):
            raise VerificationFailed("an encapsulated frame differs from the verified codestream")
