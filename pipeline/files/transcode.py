"""The encoding step of the per-file path: frames out of the source, codestreams into a new file.

Each frame is encoded (and, when asked, decoded and compared) by :func:`encode_frame`; a frame
that fails keeps the whole original (:class:`KeepOriginal`), never a partly encoded object.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.codec import FrameCodec
from pipeline.config import CompressionSettings
from pipeline.files.decide import Transcode, keep, pixel_data_size_error
from pipeline.files.errors import describe_error
from pipeline.files.frames import FrameError, FrameLayout, FrameResult, FrameStats, encode_frame, extended_offsets


@dataclass
class Transcoded:
    """A written output and what verifying it needs."""

    data: bytes
    codestreams: list[bytes]
    codec: FrameCodec  # as labelled: lossless when the floor made every frame lossless
    layout: FrameLayout
    frames: int
    stats: FrameStats
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pixel_bytes_in(self) -> int:
        return self.layout.frame_bytes * self.frames

    @property
    def pixel_bytes_out(self) -> int:
        return sum(len(c) for c in self.codestreams)


def transcode(
    ds: Any, data: bytes, decision: Transcode, settings: CompressionSettings, codec: FrameCodec
) -> Transcoded:
    """Encode every frame of ``ds`` (parsed from ``data``) and write the encapsulated output."""
    from pipeline.files.dataset import write_encapsulated

    t0 = time.perf_counter()
    layout, nframes = decision.layout, decision.frames
    results = encode_frames(stored_frames_or_keep(ds, layout, nframes), layout, settings, codec, nframes)
    codestreams = [r.codestream for r in results]
    stats = sum_stats(results)
    labelled = output_codec(codec, stats, nframes)
    made = Transcoded(b"", codestreams, labelled, layout, nframes, stats)
    try:
        made.data = write_encapsulated(
            ds,
            codestreams,
            labelled,
            photometric=labelled.output_photometric(layout.spec),
            ratio=made.pixel_bytes_in / made.pixel_bytes_out,
            settings_fingerprint=settings.fingerprint(),
            source=data,
            uid_root=settings.uid_root,
        )
    except Exception as exc:
        raise keep(f"encoding failed: {describe_error(exc)}", warning=True) from exc
    made.timings["encode"] = time.perf_counter() - t0
    return made


def stored_frames_or_keep(ds: Any, layout: FrameLayout, frames: int) -> Sequence[bytes | memoryview]:
    try:
        return stored_frames(ds, layout, frames)
    except FrameError as exc:
        raise keep(str(exc), warning=True) from exc
    except Exception as exc:
        raise keep(f"pixel data unreadable: {describe_error(exc)}", warning=True) from exc


def encode_frames(
    stored: Sequence[bytes | memoryview],
    layout: FrameLayout,
    settings: CompressionSettings,
    codec: FrameCodec,
    frames: int,
) -> list[FrameResult]:
    results = []
    for index, frame in enumerate(stored):
        result = encode_frame(index, frame, layout, codec, verify=settings.verify, floor=settings.floor)
        if result.failed:
            raise keep(result.reason(frames), warning=True)
        results.append(result)
    return results


def output_codec(codec: FrameCodec, stats: FrameStats, frames: int) -> FrameCodec:
    """The codec the output is labelled with: lossless when the quality floor encoded every frame
    lossless (a lossless image keeps its UID and gets no lossy attributes)."""
    return codec.lossless_twin() if codec.lossy and stats.lossless_frames == frames else codec


def stored_frames(ds: Any, layout: FrameLayout, frames: int) -> Sequence[bytes | memoryview]:
    """Each frame's stored bytes, without copying native pixel data."""
    from pydicom.encaps import generate_frames

    value = ds.PixelData
    if not layout.encapsulated:
        error = pixel_data_size_error(layout, frames, len(value))
        if error:
            raise FrameError(error)
        view, size = memoryview(value), layout.frame_bytes
        return [view[i * size : (i + 1) * size] for i in range(frames)]
    found = list(generate_frames(value, number_of_frames=frames, extended_offsets=extended_offsets(ds)))
    if len(found) < frames:
        raise FrameError(f"malformed DICOM: {len(found)} encapsulated frame(s), Number of Frames says {frames}")
    return found[:frames]


def sum_stats(results: list[FrameResult]) -> FrameStats:
    total = FrameStats()
    for r in results:
        if r.stats is not None:
            total.add(r.stats)
    return total
