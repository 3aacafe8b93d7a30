"""The per-file path: inspect -> decide (with its reason) -> transcode -> verify.

Pure function of (path, bytes, settings): it runs in encoder processes and in tests alike. Each
step raises :class:`KeepOriginal` to stop: the file is then kept byte-for-byte with the reason.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

from pipeline.codec import FrameCodec, codec_for
from pipeline.config import CompressionSettings
from pipeline.files.decide import Keep, KeepOriginal, Transcode, decide, keep
from pipeline.files.errors import describe_error
from pipeline.files.inspect import Parsed, check, parse
from pipeline.files.outcome import FileOutcome
from pipeline.files.transcode import Transcoded, transcode
from pipeline.files.verify import floor_entry, verify_output

if TYPE_CHECKING:
    from pydicom import Dataset

# pydicom's warnings and log lines quote header values (names, IDs, dates): never let them out.
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
logging.getLogger("pydicom").propagate = False


def load_libraries(codec: FrameCodec) -> None:
    """Import everything :func:`process_file` needs, once, in the process that forks the encoders."""
    import pydicom.pixels  # noqa: F401

    import pipeline.files.dataset  # noqa: F401  (pydicom's writer and encapsulation with it)
    from pipeline.gdcm_on_demand import register

    register()  # GDCM itself waits for the first frame that needs it
    codec.load()


def process_file(path: str, data: bytes, settings: CompressionSettings, codec: FrameCodec | None = None) -> FileOutcome:
    """Decide and do what happens to one file. Never raises for bad input: it is kept instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _process(path, data, settings, codec or codec_for(settings))


def _process(path: str, data: bytes, settings: CompressionSettings, codec: FrameCodec) -> FileOutcome:
    parsed: Parsed | None = None
    try:
        t0 = time.perf_counter()
        parsed = parse(data)
        check(parsed, data)
        decision = _decide(parsed, codec)
        read = time.perf_counter() - t0
        made = transcode(parsed.ds, data, decision, settings, codec)
        verification: dict[str, Any] = verify_output(made) if settings.verify else {"status": "skipped"}
    except KeepOriginal as stop:
        return _kept(path, data, stop.keep, parsed)
    return _compressed(path, data, parsed, made, verification, settings, read_seconds=read)


def _decide(parsed: Parsed, codec: FrameCodec) -> Transcode:
    """Keep or transcode, by the rules of :func:`decide`; a big-endian source is byte-swapped
    here, once it is known to be encoded."""
    assert parsed.transfer_syntax is not None  # check() keeps files without one
    decision = decide(parsed.ds, codec, transfer_syntax=parsed.transfer_syntax, pixel_data=parsed.has_pixel_data)
    if isinstance(decision, Keep):
        raise KeepOriginal(decision)
    if not parsed.ds.original_encoding[1]:
        _to_little_endian(parsed.ds)
    return decision


def _to_little_endian(ds: Dataset) -> None:
    from pipeline.files.dataset import has_unknown_vr, swap_big_endian_words

    try:  # both parse every element: a broken one (an unknown VR...) raises here
        unknown = has_unknown_vr(ds)
        if not unknown:
            swap_big_endian_words(ds)
    except Exception as exc:
        raise keep(f"malformed DICOM: an element could not be read: {describe_error(exc)}", warning=True) from exc
    if unknown:
        raise keep("big-endian file with UN elements: their byte order cannot be converted")


def _kept(path: str, data: bytes, why: Keep, parsed: Parsed | None) -> FileOutcome:
    ts = parsed.transfer_syntax if parsed else None
    return FileOutcome(
        path=path,
        action="kept",
        bytes_in=len(data),
        reason=why.reason,
        warning=why.warning,
        data=data,
        transfer_syntax_in=ts,
        transfer_syntax_out=ts,
        sop_instance_uid_in=parsed.sop_instance_uid if parsed else None,
        directory_refs=why.directory_refs,
    )


def _compressed(
    path: str,
    data: bytes,
    parsed: Parsed,
    made: Transcoded,
    verification: dict[str, Any],
    settings: CompressionSettings,
    *,
    read_seconds: float,
) -> FileOutcome:
    ratio = made.pixel_bytes_in / made.pixel_bytes_out
    return FileOutcome(
        path=path,
        action="compressed",
        bytes_in=len(data),
        bytes_out=len(made.data),
        data=made.data,
        transfer_syntax_in=parsed.transfer_syntax,
        transfer_syntax_out=made.codec.transfer_syntax,
        sop_instance_uid_in=parsed.sop_instance_uid,
        sop_instance_uid_out=str(parsed.ds.SOPInstanceUID) if "SOPInstanceUID" in parsed.ds else None,
        frames=made.frames,
        pixel_bytes_in=made.pixel_bytes_in,
        pixel_bytes_out=made.pixel_bytes_out,
        verification=verification,
        floor=floor_entry(made.stats, settings, frames=made.frames, ratio=ratio),
        seconds={"read": read_seconds, **made.timings},
    )
