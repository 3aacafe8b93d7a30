"""The one interface every image codec implements (cf. pydicom's encoder plugins).

A codec turns one frame (as ``pixel_array`` gives it: masked to Bits Stored, sign-extended)
into a codestream, and tells the dataset writer what it did: transfer syntax, lossy method,
photometric interpretation after any colour transform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class CodecLimit(Exception):
    """The image is outside what this codec can represent; the file is kept as-is."""


@dataclass(frozen=True)
class FrameSpec:
    """The image attributes a codec needs, taken from the source dataset."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str


class FrameCodec(ABC):
    """Encode frames of one image; one instance per (codec, settings)."""

    #: Transfer Syntax UID of the output.
    transfer_syntax: str
    #: ``True`` when decoded pixels may differ from the source.
    lossy: bool
    #: Lossy Image Compression Method (0028,2114) value, e.g. ``ISO_15444_1``.
    method: str
    #: Smallest rows/columns the codec accepts.
    min_size: int = 1

    def check(self, spec: FrameSpec) -> None:
        """Raise :class:`CodecLimit` when ``spec`` is outside the codec's range."""
        if spec.bits_allocated not in (8, 16):
            raise CodecLimit(
                f"{spec.bits_allocated}-bit pixels: JPEG 2000 re-encoding supports 8 and 16 bits allocated"
            )
        if not 1 < spec.bits_stored <= spec.bits_allocated:
            raise CodecLimit(
                f"Bits Stored {spec.bits_stored} is not supported with {spec.bits_allocated} bits allocated"
            )
        if spec.samples_per_pixel not in (1, 3):
            raise CodecLimit(f"{spec.samples_per_pixel} samples per pixel: only 1 or 3 are supported")
        if min(spec.rows, spec.columns) < self.min_size:
            raise CodecLimit(
                f"{spec.rows}x{spec.columns} image: smaller than the encoder's {self.min_size}x{self.min_size} minimum"
            )

    def output_photometric(self, spec: FrameSpec) -> str:
        """Photometric Interpretation of the encoded image."""
        return spec.photometric

    def load(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a codec has a library to load
        """Import the native library now: called before forking encoders, so they share it
        instead of each importing it again for every study."""

    @abstractmethod
    def encode(self, frame: np.ndarray, spec: FrameSpec) -> bytes:
        """Return one raw codestream (not a JP2 file) for ``frame``."""

    @abstractmethod
    def decode(self, codestream: bytes) -> np.ndarray:
        """Decode one codestream to (rows, columns[, samples]), colour transform undone."""

    @abstractmethod
    def encode_for_psnr(self, frame: np.ndarray, spec: FrameSpec, psnr_db: float) -> bytes:
        """A lossy codestream aiming at ``psnr_db`` against the peak 2**BitsStored - 1 (the
        quality floor's re-encode; close, not a strict floor: the caller measures it)."""

    @abstractmethod
    def lossless_twin(self) -> FrameCodec:
        """The same codec, lossless: where no lossy encoding meets the floor."""


class Jpeg2000Family(FrameCodec):
    """What JPEG 2000 Part 1 and HTJ2K share in DICOM: colour spaces, the colour transform, palettes.

    RGB is encoded as RGB by default, without the multi-component transform: PS3.5 8.2.4 allows
    it (the photometric stays the components' own), and consumers that cannot render YBR_RCT or
    YBR_ICT (Debian's Orthanc GDCM plugin, README "Interoperability") render RGB. With
    ``colour_transform`` the reversible/irreversible transform is applied and the output is
    labelled YBR_RCT/YBR_ICT, as the standard then requires.
    """

    #: Apply the JPEG 2000 multi-component transform to RGB (``COLOUR_TRANSFORM`` setting).
    colour_transform: bool = False

    def check(self, spec: FrameSpec) -> None:
        super().check(spec)
        if spec.photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR"):
            raise CodecLimit(
                f"Photometric Interpretation {spec.photometric} cannot be stored as JPEG 2000 without conversion"
            )
        if self.lossy and spec.photometric == "PALETTE COLOR":
            raise CodecLimit("PALETTE COLOR: lossy compression would change palette indices, so colours")

    def uses_transform(self, spec: FrameSpec) -> bool:
        """Whether this frame goes through the multi-component (colour) transform."""
        return self.colour_transform and spec.photometric == "RGB"

    def output_photometric(self, spec: FrameSpec) -> str:
        """RGB stays RGB; with the transform it becomes YBR_RCT (lossless) or YBR_ICT (lossy)."""
        if self.uses_transform(spec):
            return "YBR_ICT" if self.lossy else "YBR_RCT"
        return spec.photometric
