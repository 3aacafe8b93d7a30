"""Decode what we wrote and compare it with the source pixels (as AWS HealthImaging's import does).

Lossless must be bit-exact or the file is not compressed; lossy records how far it moved. The
measurements are summed in exact integers frame by frame (:class:`FrameStats`), so an object
verified whole, frame by frame in one encoder, or across several encoders reads the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.config import CompressionSettings
from pipeline.files.floor import asked_range_psnr, range_psnr
from pipeline.files.frames import FrameError, FrameStats, measure


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


def floor_entry(stats: FrameStats, settings: CompressionSettings, *, frames: int, ratio: float) -> dict[str, Any] | None:
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
