"""Decode what we wrote and compare it with the source pixels (as AWS HealthImaging's import does).

Lossless must be bit-exact or the file is not compressed; lossy records how far it moved.
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any

import numpy as np

from pipeline.codec.base import FrameCodec


class VerificationFailed(Exception):
    """The encoded file does not decode to the source pixels."""


def decode_part10(data: bytes, codec: FrameCodec) -> np.ndarray:
    """Pixels of the file we wrote, read back from its bytes: parse it, split its encapsulated
    frames, decode each with the codec's own decoder, check the header agrees with the image."""
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    ds = dcmread(BytesIO(data))
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    frames = [codec.decode(f) for f in generate_frames(ds.PixelData, number_of_frames=nframes)]
    if len(frames) != nframes:
        raise VerificationFailed(f"{len(frames)} encapsulated frames, Number of Frames says {nframes}")
    expected = (int(ds.Rows), int(ds.Columns)) + ((int(ds.SamplesPerPixel),) if int(ds.SamplesPerPixel) > 1 else ())
    for frame in frames:
        if frame.shape != expected:
            raise VerificationFailed(f"decoded frame shape {frame.shape} differs from the header's {expected}")
    return np.stack(frames) if nframes > 1 else frames[0]


def compare(source: np.ndarray, decoded: np.ndarray, *, bits_stored: int, lossless: bool) -> dict[str, Any]:
    """Verification entry for the result record; raises when lossless output differs.

    Samples are at most 16 bits, so differences fit int32; this costs well under the decode."""
    if source.shape != decoded.shape:
        raise VerificationFailed(f"decoded shape {decoded.shape} differs from source {source.shape}")
    if lossless:
        if not np.array_equal(source, decoded):  # compares values, whatever the two dtypes
            differing = int(np.count_nonzero(np.subtract(source, decoded, dtype=np.int64)))
            raise VerificationFailed(f"lossless output differs from the source in {differing} samples")
        return {"status": "bit-exact"}
    diff = np.subtract(source, decoded, dtype=np.int64 if source.itemsize > 2 else np.int32).ravel()
    max_err = max(int(diff.max()), -int(diff.min())) if diff.size else 0
    # Not np.dot: it would start BLAS threads that spin on the cores the other encoders need.
    mse = float(np.square(diff, dtype=np.float64).sum()) / diff.size if diff.size else 0.0
    peak = float(2**bits_stored - 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    return {
        "status": "lossy",
        "psnrDb": None if math.isinf(psnr) else round(psnr, 2),
        "maxAbsError": max_err,
        "rmse": round(math.sqrt(mse), 3),
    }
