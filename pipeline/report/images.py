"""From one decoded frame to the report's 8-bit thumbnails: windowed, shrunk, and differenced.

A person judges compression on the image as a viewer shows it, so the stored values go through
the standard grey pipeline (PS3.3 C.11: Rescale Slope/Intercept, then the linear VOI window,
then MONOCHROME1 inverted) before they are shown. The window is the file's own first Window
Center/Width when it has one (top level, or the enhanced objects' functional groups), else one
taken from the data (1st to 99th percentile), and the original and the compressed image are
shown through the same window. Header values are read here to render pixels and go no further:
:class:`View` says only *where* the window came from.

Frames are shrunk before anything else (area mean, a block of rows at a time) so that working
memory is a few copies of a thumbnail plus one pass over the frame; the difference is shrunk by
its maximum instead, so an isolated error stays visible in the thumbnail, and amplified by a
power of two relative to the window, so its caption says what white means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Rows of the full-size frame handled at once while shrinking (bounds the float temporaries).
_BLOCK_ROWS = 256
#: The most the difference is amplified (white = an error of 1/64 of the window width).
MAX_GAIN = 64


@dataclass(frozen=True)
class View:
    """How to turn stored values into display grey levels (or colours)."""

    colour: bool
    slope: float = 1.0
    intercept: float = 0.0
    center: float = 0.0
    width: float = 1.0
    invert: bool = False
    #: Where the window comes from: "file" or "data"; "colour" for colour images.
    window_from: str = "data"
    #: Full scale of a colour image's samples (2**Bits Stored - 1).
    full_scale: float = 255.0

    def describe(self) -> str:
        """The caption of the window: where it came from, never its values (they are header values)."""
        if self.colour:
            return "colour, full range"
        text = "window from the file" if self.window_from == "file" else "window from the data (1st-99th percentile)"
        return text + (", MONOCHROME1 shown inverted" if self.invert else "")


def _first_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if not len(value):
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _functional(ds: Any, sequence: str, frame: int) -> Any | None:
    """The item of ``sequence`` (e.g. Frame VOI LUT) that applies to ``frame`` in an enhanced
    object: per-frame first, then shared; None for other objects."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        try:
            items = ds.get(groups)
            found = items[index].get(sequence) if items is not None and len(items) > index else None
            if found:
                return found[0]
        except Exception:  # noqa: BLE001, S112 - a malformed sequence is as good as an absent one
            continue
    return None


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    for holder in (ds, _functional(ds, "PixelValueTransformationSequence", frame)):
        if holder is None:
            continue
        slope, intercept = _first_number(holder.get("RescaleSlope")), _first_number(holder.get("RescaleIntercept"))
        if slope is not None or intercept is not None:
            return (slope if slope else 1.0), (intercept or 0.0)
    return 1.0, 0.0


def _file_window(ds: Any, frame: int) -> tuple[float, float] | None:
    for holder in (ds, _functional(ds, "FrameVOILUTSequence", frame)):
        if holder is None:
            continue
        center, width = _first_number(holder.get("WindowCenter")), _first_number(holder.get("WindowWidth"))
        if center is not None and width is not None and width >= 1:
            return center, width
    return None


def view_for(ds: Any, frame: int, pixels: np.ndarray) -> View:
    """The view of ``pixels`` (one frame, as decoded) described by its header ``ds``; a window
    from the data when the file has none. ``pixels`` is best a thumbnail: only percentiles are
    taken from it."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if pixels.ndim == 3:
        bits = int(ds.get("BitsStored", 8) or 8)
        return View(colour=True, window_from="colour", full_scale=float(2**bits - 1))
    slope, intercept = _rescale(ds, frame)
    window = _file_window(ds, frame)
    window_from = "file"
    if window is None:
        values = pixels.astype(np.float64) * slope + intercept
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
        if high <= low:
            low, high = float(values.min()), float(values.max())
        width = max(high - low, 1.0)
        window, window_from = ((low + high) / 2 + 0.5, width + 1), "data"
    return View(
        colour=False,
        slope=slope,
        intercept=intercept,
        center=window[0],
        width=window[1],
        invert=photometric == "MONOCHROME1",
        window_from=window_from,
    )


def display(pixels: np.ndarray, view: View) -> np.ndarray:
    """8-bit grey levels (or RGB) of ``pixels`` through ``view``. Grey: the linear VOI function of
    PS3.3 C.11.2.1.2.1 on the rescaled values, inverted for MONOCHROME1."""
    if view.colour:
        scaled = pixels.astype(np.float32) * (255.0 / max(view.full_scale, 1.0))
        levels: np.ndarray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)  # numpy: np.rint(...) is Any
        return levels
    values = pixels.astype(np.float64) * view.slope + view.intercept
    grey = ((values - (view.center - 0.5)) / max(view.width - 1, 1.0) + 0.5) * 255.0
    grey = np.clip(np.rint(grey), 0, 255)
    if view.invert:
        grey = 255 - grey
    return grey.astype(np.uint8)


def _display_units(view: View) -> float:
    """Grey levels per stored value of error at gain 1: a full window (full scale) is 255."""
    return 255.0 / max(view.full_scale, 1.0) if view.colour else 255.0 * abs(view.slope) / max(view.width, 1.0)


def difference_gain(error: np.ndarray, view: View) -> int:
    """The amplification that shows ``error`` best: the largest power of two up to
    :data:`MAX_GAIN` under which at most 0.5 % of the thumbnail saturates. At gain 1 the
    difference looks as large as it would through the image's own window; a low gain therefore
    means a visible error, a high one an error that had to be magnified to be seen."""
    high = float(np.percentile(error, 99.5)) * _display_units(view)
    gain = 1
    while gain < MAX_GAIN and high * gain * 2 <= 255.0:
        gain *= 2
    return gain


def difference(error: np.ndarray, view: View, gain: int) -> np.ndarray:
    """8-bit grey of ``error`` (|original - compressed| in stored values, from
    :func:`shrink_difference`) times ``gain``: white is an error of 1/gain of the window width
    (of the full scale for colour); black is none, whatever the photometric interpretation."""
    return np.clip(np.rint(error.astype(np.float64) * (_display_units(view) * gain)), 0, 255).astype(np.uint8)


def shrink_factor(rows: int, columns: int, max_side: int) -> int:
    """The whole factor that brings the longer side to at most ``max_side`` (never past the
    shorter side: a very thin image keeps at least one row or column)."""
    return max(1, min(math.ceil(max(rows, columns) / max_side), rows, columns))


def _row_blocks(rows: int, factor: int) -> list[tuple[int, int]]:
    """Blocks of about _BLOCK_ROWS rows, whole multiples of ``factor``, covering the rows that
    fill a block of the shrunk image."""
    usable, step = rows - rows % factor, max(factor, (_BLOCK_ROWS // factor) * factor)
    return [(top, min(top + step, usable)) for top in range(0, usable, step)]


def _pooled(block: np.ndarray, factor: int, columns: int, how: str) -> np.ndarray:
    block = block[:, :columns]
    shape = (block.shape[0] // factor, factor, columns // factor, factor) + block.shape[2:]
    # numpy types reductions over an axis tuple as Any (they could be scalars): they are arrays here.
    pooled: np.ndarray
    if how == "max":
        pooled = block.reshape(shape).max(axis=(1, 3))
    else:
        pooled = block.astype(np.float32).reshape(shape).mean(axis=(1, 3), dtype=np.float32)
    return pooled


def shrink(frame: np.ndarray, factor: int) -> np.ndarray:
    """The frame shrunk ``factor`` times by area mean, as float32 (edge rows and columns that do
    not fill a block are dropped: fewer than ``factor`` pixels)."""
    columns = frame.shape[1] - frame.shape[1] % factor
    return np.concatenate(
        [_pooled(frame[top:end], factor, columns, "mean") for top, end in _row_blocks(frame.shape[0], factor)]
    )


def shrink_difference(original: np.ndarray, compressed: np.ndarray, factor: int) -> np.ndarray:
    """|original - compressed| shrunk ``factor`` times by its maximum (the greatest channel for
    colour), so an error confined to one pixel still shows; a block of rows at a time."""
    if original.shape != compressed.shape:
        raise ValueError(f"the compressed frame is {compressed.shape}, the original {original.shape}")
    columns = original.shape[1] - original.shape[1] % factor
    out = []
    for top, end in _row_blocks(original.shape[0], factor):
        diff = np.abs(original[top:end].astype(np.int64) - compressed[top:end].astype(np.int64))
        if diff.ndim == 3:
            diff = diff.max(axis=2)
        out.append(_pooled(diff, factor, columns, "max"))
    return np.concatenate(out).astype(np.float32)
