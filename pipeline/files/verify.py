"""Decode what we wrote and compare it with the source pixels (as AWS HealthImaging's import does).

Lossless must be bit-exact or the file is not compressed; lossy records how far it moved. The
measurements are summed in exact integers frame by frame (:class:`FrameStats`), so an object
verified whole, frame by frame in one encoder, or across several encoders reads the same.
"""

from __future__ import annotations

import math
import time
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import CompressionSettings
from pipeline.files.floor import asked_range_psnr, range_psnr
from pipeline.files.frames import FrameError, FrameLayout, FrameStats, extended_offsets, measure

if TYPE_CHECKING:
    from pipeline.files.transcode import Transcoded


class VerificationFailed(Exception):
    """The encoded file does not decode to the source pixels."""


def summarise(stats: FrameStats, *, bits_stored: int, lossless: bool) -> dict[str, Any]:
    """The verification entry of the result record from summed measurements; raises when a
    lossless output differs."""
    if lossless:
        if stats.differing:
            raise VerificationFailed(f"lossless output differs from the source in {stats.differing} samples")
        return {"status": "bit-exact"}
    mse = stats.squared_error / stats.samples if stats.samples else 0.0
    peak = float(2**bits_stored - 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    ranged = range_psnr(stats)
    return {
        "status": "lossy",
        "psnrDb": None if math.isinf(psnr) else round(psnr, 2),
        "rangePsnrDb": None if math.isinf(ranged) else round(ranged, 2),
        "maxAbsError": stats.max_abs_error,
        "rmse": round(math.sqrt(mse), 3),
    }


def floor_entry(
    stats: FrameStats, settings: CompressionSettings, *, frames: int, ratio: float
) -> dict[str, Any] | None:
    """What the quality floor did to one object, for the record (``None``: no floor in force)."""
    floor = settings.floor
    if floor is None:
        return None
    entry: dict[str, Any] = {"minPsnrDb": floor, "askedRate": float(settings.rate), "action": "met"}
    if not stats.reencoded:
        return entry
    asked = asked_range_psnr(stats)
    final = range_psnr(stats)
    gave = f"rate {settings.rate:g} gave {asked:.1f} dB < {floor:g}"
    if frames > 1:
        gave += f" ({stats.reencoded} of {frames} frames below)"
        entry["framesReencoded"] = stats.reencoded
    if stats.lossless_frames == frames:
        entry["action"] = "lossless"
        entry["detail"] = f"{gave} and no lossy encoding reached it: encoded lossless, {ratio:.1f}:1"
    else:
        entry["action"] = "reencoded"
        got = "lossless" if math.isinf(final) else f"{final:.1f} dB"
        entry["detail"] = f"{gave}: re-encoded at {ratio:.1f}:1, {got}"
        if stats.lossless_frames:
            entry["framesLossless"] = stats.lossless_frames
    return entry


def compare(source: np.ndarray, decoded: np.ndarray, *, bits_stored: int, lossless: bool) -> dict[str, Any]:
    """Verification entry for two whole images (or frame stacks) of the same shape."""
    try:
        stats = measure(source, decoded)
    except FrameError as exc:
        raise VerificationFailed(str(exc)) from exc
    return summarise(stats, bits_stored=bits_stored, lossless=lossless)


def verify_output(made: Transcoded) -> dict[str, Any]:
    """The last step of the per-file path: the written file read back holds exactly the frames
    that were decoded and compared, and they meet the mode's promise. Raises
    :class:`KeepOriginal`: what was written is never given out unverified."""
    from pipeline.files.decide import keep
    from pipeline.files.errors import describe_error

    t0 = time.perf_counter()
    try:
        check_container(made.data, made.codestreams, made.layout)
        verification = summarise(made.stats, bits_stored=made.layout.bits_stored, lossless=not made.codec.lossy)
    except VerificationFailed as exc:
        raise keep(f"verification failed, original kept: {exc}", warning=True) from exc
    except Exception as exc:
        raise keep(
            f"verification could not decode the output, original kept: {describe_error(exc)}", warning=True
        ) from exc
    made.timings["verify"] = time.perf_counter() - t0
    return verification


def check_container(out: bytes, codestreams: list[bytes], layout: FrameLayout) -> None:
    """Read the written file back from its bytes: its header describes the image we encoded and
    its encapsulated frames are exactly the codestreams that were decoded and compared."""
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    ds = dcmread(BytesIO(out))
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if (int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))) != (
        layout.rows,
        layout.columns,
        layout.samples_per_pixel,
    ):
        raise VerificationFailed("the written header does not describe the encoded image")
    found = list(generate_frames(ds.PixelData, number_of_frames=nframes, extended_offsets=extended_offsets(ds)))
    if len(found) != nframes or nframes != len(codestreams):
        raise VerificationFailed(f"{len(found)} encapsulated frames, Number of Frames says {nframes}")
    for written, encoded in zip(found, codestreams, strict=True):
        if written[: len(encoded)] != encoded or len(written) - len(encoded) not in (0, 1):
            raise VerificationFailed("an encapsulated frame differs from the verified codestream")
