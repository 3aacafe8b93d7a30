"""Inline SVG charts: per image of a series, its quality and its ratio, with the floor drawn.

SVG written as text needs no script, font file or library and stays sharp at any zoom. A series
of thousands of images is drawn as at most ``max_points`` points, each the worst image of its
bin, so the chart's size is bounded and no bad image hides behind a good neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from pipeline.report.series import Image, Series

WIDTH, HEIGHT = 760, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 58, 14, 34
#: Colours of the points by what the quality floor did (met or no floor: blue).
FLOOR_COLOURS = {"reencoded": "#d97706", "lossless": "#059669"}
_POINT, _RATIO, _FLOOR = "#1d4ed8", "#9ca3af", "#dc2626"


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values from at or below ``low`` to at or above ``high`` (steps of 1, 2 or 5
    times a power of ten, about ``count`` of them)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _bins(images: Sequence[Image], max_points: int) -> list[tuple[int, Image, float | None]]:
    """(position, the bin's worst image, the bin's mean ratio), at most ``max_points`` of them."""
    size = max(1, math.ceil(len(images) / max_points))
    out = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        worst = min(chunk, key=lambda i: math.inf if i.measure is None else i.measure)
        ratios = [i.ratio for i in chunk if i.ratio is not None]
        out.append((start + chunk.index(worst), worst, sum(ratios) / len(ratios) if ratios else None))
    return out


def _polyline(points: Iterable[tuple[float, float]], **attrs: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<polyline points="{coords}" fill="none" {extra}/>'


@dataclass(frozen=True)
class _Plot:
    """The chart's geometry: where an image, a dB value and a ratio go."""

    images: int
    low: float
    high: float
    ratio_high: float
    width: float = WIDTH - _LEFT - _RIGHT
    height: float = HEIGHT - _TOP - _BOTTOM

    def x(self, pos: int) -> float:
        return _LEFT + (self.width / 2 if self.images == 1 else self.width * pos / (self.images - 1))

    def y_db(self, value: float) -> float:
        return _TOP + self.height * (1 - (value - self.low) / (self.high - self.low))

    def y_ratio(self, value: float) -> float:
        return _TOP + self.height * (1 - value / self.ratio_high)


def quality_chart(series: Series, floor: float | None, shown: Iterable[str] = (), *, max_points: int = 300) -> str:
    """An SVG chart of ``series``: each image's range-PSNR (PSNR when the record has no
    range-PSNR; bit-exact images along the top) on the left axis, its ratio on the right one,
    the floor as a dashed red line; the images shown in the report are ringed."""
    images = series.images
    points = _bins(images, max_points)
    measures = [i.measure for _, i, _ in points if i.measure is not None and math.isfinite(i.measure)]
    ratios = [r for _, _, r in points if r is not None]
    label = "range-PSNR (dB)" if all(i.range_psnr is not None for i in images if not i.bit_exact) else "PSNR (dB)"
    span = measures + ([floor] if floor is not None else [])
    db_ticks = nice_ticks(min(span) - 1, max(span) + 1) if span else [0.0, 1.0]
    ratio_ticks = nice_ticks(0, max(ratios) * 1.1 if ratios else 1.0)
    plot = _Plot(len(images), db_ticks[0], db_ticks[-1], ratio_ticks[-1] or 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(label)} and ratio per image of {escape(series.folder)}">',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot.width}" height="{plot.height}" fill="#fff" stroke="#d1d5db"/>',
    ]
    parts += _grid(plot, db_ticks if measures else [], ratio_ticks)
    if ratios:
        parts.append(
            _polyline(
                ((plot.x(p), plot.y_ratio(r)) for p, _, r in points if r is not None), stroke=_RATIO, stroke_width="1.5"
            )
        )
    if floor is not None and measures:
        fy = plot.y_db(floor)
        parts.append(
            f'<line x1="{_LEFT}" y1="{fy:.1f}" x2="{_LEFT + plot.width}" y2="{fy:.1f}" stroke="{_FLOOR}" stroke-width="1.5" stroke-dasharray="6 4"/>'
            f'<text x="{_LEFT + plot.width - 4}" y="{fy - 4:.1f}" text-anchor="end" class="tick" fill="{_FLOOR}">floor {_fmt(floor)} dB</text>'
        )
    parts += _points(plot, points, set(shown))
    parts += _axes(plot, escape(label) if measures else "bit-exact", len(images), len(points), max_points)
    return "".join(parts)


def _grid(plot: _Plot, db_ticks: list[float], ratio_ticks: list[float]) -> list[str]:
    parts = []
    for tick in db_ticks:
        ty = plot.y_db(tick)
        parts.append(
            f'<line x1="{_LEFT}" y1="{ty:.1f}" x2="{_LEFT + plot.width}" y2="{ty:.1f}" stroke="#eef0f3"/>'
            f'<text x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" class="tick">{_fmt(tick)}</text>'
        )
    for tick in ratio_ticks:
        parts.append(
            f'<text x="{_LEFT + plot.width + 6}" y="{plot.y_ratio(tick) + 4:.1f}" class="tick ratio">{_fmt(tick)}</text>'
        )
    return parts


def _points(plot: _Plot, points: list[tuple[int, Image, float | None]], shown: set[str]) -> list[str]:
    parts = []
    for pos, image, ratio in points:
        m = image.measure
        if m is None:
            continue
        cy = _TOP + 4 if math.isinf(m) else plot.y_db(m)
        colour = FLOOR_COLOURS.get(str((image.floor or {}).get("action")), _POINT)
        value = "bit-exact" if math.isinf(m) else f"{m:.1f} dB"
        ratio_text = f", {ratio:.1f}:1" if ratio is not None else ""
        ring = ' stroke="#111" stroke-width="2"' if image.path in shown else ""
        parts.append(
            f'<circle cx="{plot.x(pos):.1f}" cy="{cy:.1f}" r="{4.5 if ring else 3}" fill="{colour}"{ring}>'
            f"<title>{escape(image.path)}: {value}{ratio_text}</title></circle>"
        )
    return parts


def _axes(plot: _Plot, label: str, images: int, points: int, max_points: int) -> list[str]:
    middle = _TOP + plot.height / 2
    binned = f", worst of every {math.ceil(images / max_points)} shown" if points < images else ""
    return [
        f'<text x="{_LEFT - 40}" y="{middle:.1f}" transform="rotate(-90 {_LEFT - 40} {middle:.1f})" '
        f'text-anchor="middle" class="axis" fill="{_POINT}">{label}</text>',
        f'<text x="{WIDTH - 12}" y="{middle:.1f}" transform="rotate(90 {WIDTH - 12} {middle:.1f})" '
        f'text-anchor="middle" class="axis" fill="#6b7280">ratio (:1)</text>',
        f'<text x="{_LEFT + plot.width / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" class="axis">'
        f"images in order (1 to {images}{binned})</text></svg>",
    ]
