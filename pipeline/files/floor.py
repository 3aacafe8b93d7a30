"""The quality floor: no lossy image below a range-PSNR, and a record of what it took.

Range-PSNR = 20 log10((max - min of the source image) / RMSE). Unlike PSNR against
2**BitsStored - 1 (what OpenJPEG reports, and what flatters images that use little of that range),
it says whether the image survived: at rate 100 a 512x512 CT slice lands near 45 dB, a 64x64 MR
slice near 17 dB (the codec cannot reach 100:1 there without discarding the image).

Applied frame by frame, each frame against its own range: if every frame meets the floor, so
does the object (its RMSE is the mean of the frames', its range at least theirs), and frames can
be decided on any encoder. A frame below it is re-encoded aiming at the floor (OpenJPEG's
PSNR-targeted layers, or the HTJ2K step for that PSNR), measured, and retried with the measured
shortfall added, a few times; if none meets it, the frame is encoded lossless. Deterministic: the
same frame and floor always take the same trials.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.codec.base import FrameCodec, FrameSpec
from pipeline.files.frames import FrameStats, measure

#: Lossy re-encodes tried before falling back to lossless.
MAX_TRIALS = 4
#: Aim this far above the floor: OpenJPEG lands within a few tenths of a dB of its target.
MARGIN_DB = 0.3


def range_psnr(stats: FrameStats) -> float:
    """The range-PSNR of what ``stats`` measured (inf when the image came back exactly)."""
    if not stats.samples or not stats.squared_error:
        return math.inf
    rmse = math.sqrt(stats.squared_error / stats.samples)
    return 20 * math.log10(max(stats.high - stats.low, 1) / rmse)


def asked_range_psnr(stats: FrameStats) -> float:
    """The range-PSNR the asked rate gave, before the floor re-encoded anything."""
    return range_psnr(FrameStats(stats.samples, stats.asked_squared_error, low=stats.low, high=stats.high))


def hold_floor(
    pixels: np.ndarray, spec: FrameSpec, codec: FrameCodec, floor: float, first: FrameStats
) -> tuple[bytes, FrameStats]:
    """A codestream of ``pixels`` at or above ``floor``, given that the asked encoding (measured
    as ``first``) fell below it; the returned stats say what it took."""
    offset = 20 * math.log10((2**spec.bits_stored - 1) / max(first.high - first.low, 1))
    extra = MARGIN_DB
    for _ in range(MAX_TRIALS):
        codestream = codec.encode_for_psnr(pixels, spec, floor + offset + extra)
        stats = measure(pixels, codec.decode(codestream))
        achieved = range_psnr(stats)
        if achieved >= floor:
            stats.reencoded, stats.asked_squared_error = 1, first.squared_error
            return codestream, stats
        extra += floor - achieved + MARGIN_DB
    twin = codec.lossless_twin()
    codestream = twin.encode(pixels, spec)
    stats = measure(pixels, twin.decode(codestream))
    stats.reencoded, stats.lossless_frames, stats.asked_squared_error = 1, 1, first.squared_error
    return codestream, stats
