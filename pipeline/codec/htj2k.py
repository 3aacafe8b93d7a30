"""High-Throughput JPEG 2000 (ISO 15444-15) through imagecodecs/OpenJPH: about 10x faster.

OpenJPH has no rate control, only a quantisation step, so lossy encoding searches the step
(in log space, a few trial encodes of ~1 ms each) for the one that lands nearest the asked
ratio; the achieved ratio is what the record and the dataset report. Optional: imagecodecs
is not in the default Lambda artifact (see README).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.codec.base import CodecLimit, FrameSpec, Jpeg2000Family
from pipeline.codec.j2k import native_contiguous

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSY = "1.2.840.10008.1.2.4.203"
_SEARCH_STEPS = 9
_TOLERANCE = 0.08  # stop when within 8% of the asked ratio


class HTJ2KCodec(Jpeg2000Family):
    method = "ISO_15444_15"
    min_size = 32

    def __init__(self, rate: float | None) -> None:
        try:
            import imagecodecs
        except ImportError as exc:  # pragma: no cover - depends on the deployment
            raise CodecLimit("HTJ2K needs the imagecodecs package, which this deployment does not include") from exc
        if not imagecodecs.HTJ2K.available:  # pragma: no cover
            raise CodecLimit("this imagecodecs build has no HTJ2K encoder")
        self.rate = rate
        self.lossy = rate is not None
        self.transfer_syntax = HTJ2K_LOSSY if self.lossy else HTJ2K_LOSSLESS

    def encode(self, frame: np.ndarray, spec: FrameSpec) -> bytes:
        import imagecodecs

        frame = native_contiguous(frame)
        rgb = spec.photometric == "RGB"
        if not self.lossy:
            return bytes(imagecodecs.htj2k_encode(frame, reversible=True, rgb=rgb))
        target = float(self.rate)  # type: ignore[arg-type]
        raw = frame.size * spec.bits_allocated // 8
        # Bisection on log(step): larger steps give higher ratios.
        lo, hi = math.log(1e-5), math.log(2.0)
        best: bytes | None = None
        best_err = math.inf
        for _ in range(_SEARCH_STEPS):
            mid = (lo + hi) / 2
            out = bytes(imagecodecs.htj2k_encode(frame, level=math.exp(mid), reversible=False, rgb=rgb))
            ratio = raw / len(out)
            err = abs(math.log(ratio / target))
            if err < best_err:
                best, best_err = out, err
            if err < math.log1p(_TOLERANCE):
                break
            if ratio < target:
                lo = mid
            else:
                hi = mid
        assert best is not None
        return best

    def decode(self, codestream: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.htj2k_decode(codestream)
