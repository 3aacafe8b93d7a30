"""High-Throughput JPEG 2000 (ISO 15444-15) through imagecodecs/OpenJPH: about 10x faster.

OpenJPH has no rate control, only a quantisation step, so lossy encoding searches the step
(a secant search in log space, usually 2 or 3 trial encodes of ~1 ms each) for the one that
lands nearest the asked ratio; the achieved ratio is what the record and the dataset report. Optional: imagecodecs
is not in the default Lambda artifact (see README).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pipeline.codec.base import CodecLimit, FrameSpec, Jpeg2000Family
from pipeline.codec.j2k import native_contiguous

#: HTJ2K Lossless RPCL: what AWS HealthImaging stores and viewers stream resolution by resolution.
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.202"
HTJ2K_LOSSY = "1.2.840.10008.1.2.4.203"
#: OpenJPH's default number of decomposition levels, the fewest used here.
_MIN_LEVELS = 5
#: The lowest resolution a progressive viewer shows first is at most this many pixels a side.
_LOWEST_RESOLUTION = 64
_MAX_ENCODES = 8
_TOLERANCE = 0.08  # stop when within 8% of the asked ratio
# d log(ratio) / d log(step): only the first guess of the slope (CT slices and the corpus's MR,
# ultrasound and small images: 0.6 needs fewer encodes than 0.8 at rates 20, 50 and 100).
_SLOPE = 0.6
_FLAT = 0.05  # a measured slope below this: the ratio no longer follows the step (headers dominate)
_STEP_RANGE = (1e-6, 4.0)


def search_step(encode: Callable[[float], bytes], *, raw_bytes: int, target: float) -> bytes:
    """The codestream whose ratio is nearest ``target``, found by a safeguarded secant search on
    log(step) -> log(ratio) (monotonic, nearly linear): usually 2 or 3 encodes. Deterministic: the
    same image always gives the same bytes, whatever was encoded before it. Gives up early when
    the ratio stops moving (a small image whose headers outweigh its pixels cannot reach 100:1)."""
    goal = math.log(target)
    lo: tuple[float, float] | None = None  # (log step, log ratio) below the goal
    hi: tuple[float, float] | None = None  # ... above it
    x = math.log(1e-3) + (goal - math.log(37.0)) / _SLOPE  # CT: step 1e-3 gives about 37:1
    best, best_err = b"", math.inf
    tried: set[float] = set()
    last: tuple[float, float] | None = None
    for _ in range(_MAX_ENCODES):
        x = min(max(x, math.log(_STEP_RANGE[0])), math.log(_STEP_RANGE[1]))
        if round(x, 2) in tried:  # the ratio jumps past the goal here, or the range ends: done
            break
        tried.add(round(x, 2))
        out = encode(math.exp(x))
        y = math.log(raw_bytes / len(out))
        err = abs(y - goal)
        if err < best_err:
            best, best_err = out, err
        if err < math.log1p(_TOLERANCE):
            break
        if y < goal:
            lo = (x, y)
        else:
            hi = (x, y)
        if lo and hi:  # secant through the bracket; bisect if it would leave the bracket
            slope = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] != lo[0] else 0.0
            nxt = lo[0] + (goal - lo[1]) / slope if slope > 0 else (lo[0] + hi[0]) / 2
            x = nxt if min(lo[0], hi[0]) < nxt < max(lo[0], hi[0]) else (lo[0] + hi[0]) / 2
        else:  # one side known: extrapolate (measured slope, else the prior), at most e**3 at a time
            slope = _SLOPE
            if last is not None and x != last[0]:
                slope = (y - last[1]) / (x - last[0])
                if slope < _FLAT:
                    break
            last = (x, y)
            x += max(-3.0, min(3.0, (goal - y) / slope))
    return best


def decomposition_levels(rows: int, columns: int) -> int:
    """Enough wavelet levels that the lowest resolution is at most 64 pixels a side (a large
    frame streams from a thumbnail), never fewer than OpenJPH's default 5."""
    side, levels = max(rows, columns), 0
    while side > _LOWEST_RESOLUTION:
        side, levels = (side + 1) // 2, levels + 1
    return max(_MIN_LEVELS, levels)


class HTJ2KCodec(Jpeg2000Family):
    """RPCL progression with TLM markers for every output: .202 lossless (PS3.5 A.4.x's RPCL
    constraints), .203 lossy (the same codestream layout; .203 allows any)."""

    method = "ISO_15444_15"
    min_size = 32

    def __init__(self, rate: float | None, *, colour_transform: bool = False) -> None:
        try:
            import imagecodecs
        except ImportError as exc:  # pragma: no cover - depends on the deployment
            raise CodecLimit("HTJ2K needs the imagecodecs package, which this deployment does not include") from exc
        if not imagecodecs.HTJ2K.available:  # pragma: no cover
            raise CodecLimit("this imagecodecs build has no HTJ2K encoder")
        self.rate = rate
        self.colour_transform = colour_transform
        self.lossy = rate is not None
        self.transfer_syntax = HTJ2K_LOSSY if self.lossy else HTJ2K_LOSSLESS

    def load(self) -> None:
        import imagecodecs  # noqa: F401

    def _encode(self, frame: np.ndarray, spec: FrameSpec, step: float | None) -> bytes:
        """One codestream: RPCL (OpenJPH's order), TLM markers, enough levels; lossless when
        ``step`` is None, else irreversible with that quantisation step."""
        import imagecodecs

        kwargs = {"reversible": True} if step is None else {"level": step, "reversible": False}
        return bytes(
            imagecodecs.htj2k_encode(
                frame,
                rgb=self.uses_transform(spec),
                tlm=True,
                resolutions=decomposition_levels(spec.rows, spec.columns),
                **kwargs,
            )
        )

    def encode(self, frame: np.ndarray, spec: FrameSpec) -> bytes:
        frame = native_contiguous(frame)
        if self.rate is None:  # lossless (self.lossy is False)
            return self._encode(frame, spec, None)
        return search_step(
            lambda step: self._encode(frame, spec, step),
            raw_bytes=frame.size * spec.bits_allocated // 8,
            target=float(self.rate),
        )

    def decode(self, codestream: bytes) -> np.ndarray:
        import imagecodecs

        # Interleaved, like the source frame (without a colour transform OpenJPH defaults to planar).
        return imagecodecs.htj2k_decode(codestream, planar=False)

    def encode_for_psnr(self, frame: np.ndarray, spec: FrameSpec, psnr_db: float) -> bytes:
        # OpenJPH takes a quantisation step, not a PSNR: uniform quantisation of step s (relative
        # to the full range) leaves an RMSE of about s * 2**bits / sqrt(12), i.e. PSNR ~ 10.8 dB
        # - 20 log10(s). The wavelet's gains shift it by a few dB; the caller measures and retries.
        step = min(max(10 ** ((10.79 - psnr_db) / 20), _STEP_RANGE[0]), _STEP_RANGE[1])
        return self._encode(native_contiguous(frame), spec, step)

    def lossless_twin(self) -> HTJ2KCodec:
        return HTJ2KCodec(None, colour_transform=self.colour_transform)
