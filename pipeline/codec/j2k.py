"""JPEG 2000 Part 1 (ISO 15444-1) through pylibjpeg-openjpeg: the default codec.

pylibjpeg-openjpeg holds the GIL and is not thread-safe: call it from one thread per
process (the engine's encoders are processes).
"""

from __future__ import annotations

import numpy as np

from pipeline.codec.base import FrameSpec, Jpeg2000Family

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"

# OpenJPEG uses 6 resolution levels: 2**5 is the smallest side it will take.
_MIN_SIDE = 32
# openjpeg's colour-space codes.
_SRGB, _GREY, _SYCC = 1, 2, 3


def _colour_code(photometric: str) -> int:
    if photometric == "RGB":
        return _SRGB
    if photometric.startswith("YBR"):
        return _SYCC
    return _GREY


def native_contiguous(frame: np.ndarray) -> np.ndarray:
    """The encoders read raw memory: byte-swap big-endian sources and drop strides."""
    if not frame.dtype.isnative:
        frame = frame.astype(frame.dtype.newbyteorder("="))
    return np.ascontiguousarray(frame)


def _encode(
    frame: np.ndarray,
    spec: FrameSpec,
    use_mct: bool,
    *,
    compression_ratios: list[float] | None = None,
    signal_noise_ratios: list[float] | None = None,
) -> bytes:
    import openjpeg  # heavy native import, only where encoding happens

    return bytes(
        openjpeg.encode(
            native_contiguous(frame),
            bits_stored=spec.bits_stored,
            photometric_interpretation=_colour_code(spec.photometric),
            use_mct=use_mct,
            compression_ratios=compression_ratios,  # None (both): lossless, openjpeg's defaults
            signal_noise_ratios=signal_noise_ratios,
        )
    )


class J2KCodec(Jpeg2000Family):
    """Reversible 5/3 (lossless) or irreversible 9/7 at a target rate (lossy)."""

    method = "ISO_15444_1"
    min_size = _MIN_SIDE

    def __init__(self, rate: float | None, *, colour_transform: bool = False) -> None:
        self.rate = rate
        self.colour_transform = colour_transform
        self.lossy = rate is not None
        self.transfer_syntax = J2K_LOSSY if self.lossy else J2K_LOSSLESS

    def load(self) -> None:
        import openjpeg  # noqa: F401

    def encode(self, frame: np.ndarray, spec: FrameSpec) -> bytes:
        if self.rate is None:  # lossless (self.lossy is False)
            return _encode(frame, spec, self.uses_transform(spec))
        # OpenJPEG's rate is relative to Bits Stored; ours to the allocated size (pydicom's j2k_cr).
        return _encode(
            frame,
            spec,
            self.uses_transform(spec),
            compression_ratios=[float(self.rate) * spec.bits_stored / spec.bits_allocated],
        )

    def decode(self, codestream: bytes) -> np.ndarray:
        import openjpeg

        return openjpeg.decode(codestream)

    def encode_for_psnr(self, frame: np.ndarray, spec: FrameSpec, psnr_db: float) -> bytes:
        # OpenJPEG's PSNR-targeted layer (its PSNR is against 2**precision - 1, as asked here).
        return _encode(frame, spec, self.uses_transform(spec), signal_noise_ratios=[float(psnr_db)])

    def lossless_twin(self) -> J2KCodec:
        return J2KCodec(None, colour_transform=self.colour_transform)
