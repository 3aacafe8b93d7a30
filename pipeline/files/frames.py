"""One frame at a time: how a stored frame becomes pixels, a codestream, and a verdict.

Every image, single- or multi-frame, small or streamed, goes through :func:`encode_frame`, so
one frame costs the same bytes wherever it is encoded (an encoder handed the whole file, or one
handed this frame alone by the parent). Working memory is a few times one frame, never the object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.codec.base import FrameCodec, FrameSpec
from pipeline.files.errors import describe_error

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeOptions

#: Lossless compressed inputs we decode and re-encode (the decoded pixels are the reference).
LOSSLESS_COMPRESSED = {
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL",
}
#: Colour spaces a JPEG 2000 decoder turns back into RGB (its inverse colour transform).
_TRANSFORMED = ("YBR_RCT", "YBR_ICT")
# Rows compared at once when verifying: bounds the difference arrays on very large frames.
_COMPARE_ROWS = 256


class FrameError(Exception):
    """A frame that cannot be decoded, encoded or verified; the object is kept as-is."""


@dataclass(frozen=True)
class FrameLayout:
    """How the source stores each frame: enough to decode one without the dataset."""

    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int = 0

    @classmethod
    def of(cls, ds: Any, transfer_syntax: str) -> FrameLayout:
        """The layout of ``ds`` (a pydicom Dataset); KeyError/ValueError/TypeError when absent."""
        return cls(
            transfer_syntax=transfer_syntax,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric=str(ds.PhotometricInterpretation).strip(),
            planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
        )

    @property
    def encapsulated(self) -> bool:
        from pydicom.uid import UID

        return UID(self.transfer_syntax).is_encapsulated

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native frame (and of one decoded frame)."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    @property
    def spec(self) -> FrameSpec:
        """What the encoder sees: pixels as decoded (a J2K colour transform already undone)."""
        photometric = "RGB" if self.photometric in _TRANSFORMED else self.photometric
        return FrameSpec(
            rows=self.rows,
            columns=self.columns,
            samples_per_pixel=self.samples_per_pixel,
            bits_allocated=self.bits_allocated,
            bits_stored=self.bits_stored,
            signed=self.pixel_representation == 1,
            photometric=photometric,
        )

    def decode(self, data: bytes | memoryview) -> np.ndarray:
        """One frame's pixels exactly as ``pixel_array`` gives them (masked to Bits Stored,
        sign-extended, native byte order), from its stored bytes: a native frame, or the
        codestream of an encapsulated one."""
        from pydicom.encaps import encapsulate
        from pydicom.pixels import get_decoder
        from pydicom.uid import UID

        from pipeline.gdcm_on_demand import register

        register()
        buffer: Any = data
        if self.encapsulated:  # pydicom's decoders take encapsulated Pixel Data: one item, no BOT
            buffer = encapsulate([bytes(data)], has_bot=False)
        options: DecodeOptions = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "planar_configuration": self.planar_configuration,
            "number_of_frames": 1,
            "pixel_keyword": "PixelData",
            "transfer_syntax_uid": UID(self.transfer_syntax),
            "as_rgb": False,
        }
        # pydicom 3.0 annotates ``**kwargs: DecodeOptions`` where it means ``Unpack[DecodeOptions]``
        # (each option would have to be a whole DecodeOptions); the TypedDict above checks them.
        arr, _ = get_decoder(self.transfer_syntax).as_array(buffer, **options)  # type: ignore[arg-type]
        return arr


def extended_offsets(ds: Any) -> tuple[bytes, bytes] | None:
    """The Extended Offset Table and its lengths when ``ds`` has them (pydicom's frame readers take
    them as ``extended_offsets``), else ``None``."""
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
    return None


@dataclass
class FrameStats:
    """What verification measured, in exact integers so that sums over frames do not depend on
    how an object was split (an object verified whole or frame by frame reads the same)."""

    samples: int = 0
    squared_error: int = 0
    max_abs_error: int = 0
    differing: int = 0
    low: int = 0  # the source's smallest and largest sample (its range, for range-PSNR)
    high: int = 0
    #: What the asked encoding's squared error was, before the quality floor re-encoded it.
    asked_squared_error: int = 0
    reencoded: int = 0  # frames the floor re-encoded, and of those, encoded lossless
    lossless_frames: int = 0

    def add(self, other: FrameStats) -> None:
        if not self.samples:
            self.low, self.high = other.low, other.high
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.samples += other.samples
        self.squared_error += other.squared_error
        self.max_abs_error = max(self.max_abs_error, other.max_abs_error)
        self.differing += other.differing
        self.asked_squared_error += other.asked_squared_error
        self.reencoded += other.reencoded
        self.lossless_frames += other.lossless_frames


#: What a failure at each step means for the file (the original is always what is kept).
FAILURES = {
    "source": "pixel data unreadable",
    "encode": "encoding failed",
    "verify": "verification failed, original kept",
    "decode": "verification could not decode the output, original kept",
}


@dataclass
class FrameResult:
    """One encoded frame, or the step that failed (a key of FAILURES) and why."""

    index: int
    codestream: bytes = field(default=b"", repr=False)
    stats: FrameStats | None = None
    failed: str | None = None
    detail: str = ""
    seconds: tuple[float, float] = (0.0, 0.0)  # encoding (decode of the source included), verification

    def reason(self, frames: int) -> str:
        """The kept file's reason; frames are named only in multi-frame objects."""
        where = f"frame {self.index + 1} of {frames}: " if frames > 1 else ""
        return f"{where}{FAILURES[self.failed or 'encode']}: {self.detail}"


def measure(source: np.ndarray, decoded: np.ndarray) -> FrameStats:
    """Differences between two frames of the same shape, a block of rows at a time (a 27 MB
    mammogram would otherwise need int64 and float64 copies of itself)."""
    if source.shape != decoded.shape:
        raise FrameError(f"decoded shape {decoded.shape} differs from source {source.shape}")
    stats = FrameStats()
    if source.size:
        stats.low, stats.high = int(source.min()), int(source.max())
    for top in range(0, max(source.shape[0], 1), _COMPARE_ROWS):
        a, b = source[top : top + _COMPARE_ROWS], decoded[top : top + _COMPARE_ROWS]
        diff = np.subtract(a, b, dtype=np.int64)
        if not diff.size:
            continue
        stats.samples += diff.size
        stats.differing += int(np.count_nonzero(diff))
        stats.max_abs_error = max(stats.max_abs_error, int(np.abs(diff).max()))
        stats.squared_error += int(np.square(diff).sum())  # int64: 256 rows of 16-bit squares fit
    stats.asked_squared_error = stats.squared_error
    return stats


def encode_frame(
    index: int,
    data: bytes | memoryview,
    layout: FrameLayout,
    codec: FrameCodec,
    *,
    verify: bool,
    floor: float | None = None,
) -> FrameResult:
    """Decode one stored frame, encode it, and (when asked, or to hold a lossy codec to the
    quality ``floor``) decode the codestream and compare. Never raises: a failure is the
    result's ``failed`` step."""
    t0 = time.perf_counter()
    try:
        pixels = layout.decode(data)
    except Exception as exc:
        return FrameResult(index, failed="source", detail=describe_error(exc))
    try:
        codestream = codec.encode(pixels, layout.spec)
    except Exception as exc:
        return FrameResult(index, failed="encode", detail=describe_error(exc))
    t1 = time.perf_counter()
    floor = floor if codec.lossy else None
    if not verify and floor is None:
        return FrameResult(index, codestream, seconds=(t1 - t0, 0.0))
    try:
        decoded = codec.decode(codestream)
    except Exception as exc:
        return FrameResult(index, failed="decode", detail=describe_error(exc))
    try:
        stats = measure(pixels, decoded)
    except FrameError as exc:
        return FrameResult(index, failed="verify", detail=str(exc))
    if floor is not None:
        from pipeline.files.floor import hold_floor, range_psnr

        if range_psnr(stats) < floor:
            try:
                codestream, stats = hold_floor(pixels, layout.spec, codec, floor, stats)
            except Exception as exc:
                return FrameResult(
                    index, failed="encode", detail=f"re-encoding for the quality floor: {describe_error(exc)}"
                )
    lossless = not codec.lossy or stats.lossless_frames > 0
    if lossless and stats.differing:
        return FrameResult(
            index, failed="verify", detail=f"lossless output differs from the source in {stats.differing} samples"
        )
    return FrameResult(index, codestream, stats, seconds=(t1 - t0, time.perf_counter() - t1))
