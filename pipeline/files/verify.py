"""Decode what we wrote and compare it with the source pixels (as AWS HealthImaging's import does).

Lossless must be bit-exact or the file is not compressed; lossy records how far it moved.
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any

import numpy as np


class VerificationFailed(Exception):
    """The encoded file does not decode to the source pixels."""


def decode_part10(data: bytes) -> np.ndarray:
    """Pixels of a Part 10 file as ``pixel_array`` gives them, without colour conversion."""
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    return pixel_array(dcmread(BytesIO(data)), as_rgb=False)


def compare(source: np.ndarray, decoded: np.ndarray, *, bits_stored: int, lossless: bool) -> dict[str, Any]:
    """Verification entry for the result record; raises when lossless output differs."""
    if source.shape != decoded.shape:
        raise VerificationFailed(f"decoded shape {decoded.shape} differs from source {source.shape}")
    diff = np.abs(source.astype(np.int64) - decoded.astype(np.int64))
    max_err = int(diff.max()) if diff.size else 0
    if lossless:
        if max_err:
            raise VerificationFailed(f"lossless output differs from the source in {int(np.count_nonzero(diff))} samples")
        return {"status": "bit-exact"}
    mse = float(np.mean(diff.astype(np.float64) ** 2)) if diff.size else 0.0
    peak = float(2**bits_stored - 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    return {
        "status": "lossy",
        "psnrDb": None if math.isinf(psnr) else round(psnr, 2),
        "maxAbsError": max_err,
        "rmse": round(math.sqrt(mse), 3),
    }
