"""The visual quality report: one self-contained HTML file next to the ZIP (``OUT.report.html``).

A person checks a lossy study by looking at it: per folder of the study, its worst image and its
median one as original / compressed / amplified difference, a chart of every image's range-PSNR
and ratio against the quality floor, what the floor did, and what was kept as-is and why. It
is built from the result record, the study and the ZIP after the fact, so it never slows or
risks the compression itself; it decodes only the frames it shows (one per picked image, from
the study and from the ZIP) and its size is bounded by :class:`Limits` whatever the study.

Usage::

    html = build_report(record, LocalStudySource(src), "out/study.zip")
    report_path("out/study.zip").write_bytes(html)
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files.header import SeekableReader
from pipeline.report.frames import WHOLE_BELOW
from pipeline.report.html import render_page
from pipeline.report.panels import Panel, render_panel
from pipeline.report.series import Series, series_of
from pipeline.study.source import StudySource

__all__ = ["REPORT_SUFFIX", "Limits", "build_report", "report_name", "report_path"]

#: ``OUT.zip`` -> ``OUT.report.html`` (as ``OUT.result.json``).
REPORT_SUFFIX = ".report.html"


@dataclass(frozen=True)
class Limits:
    """What bounds the report's size and work, whatever the study."""

    #: Longest side of a thumbnail in pixels (larger frames are shrunk by a whole factor).
    thumbnail: int = 256
    #: Bytes of image data (base64 PNG) in the whole page; series past it keep captions only.
    image_bytes: int = 3_000_000
    #: Series shown in detail (images and chart): those with the lowest quality first.
    series: int = 40
    #: Rows of each table (series, floor decisions, kept files, warnings).
    rows: int = 500
    #: Points per chart (each the worst image of its bin).
    chart_points: int = 300


def report_name(zip_name: str) -> str:
    """The report's name (a file name or an S3 key) for the ZIP's: ``a/b.zip`` -> ``a/b.report.html``."""
    stem = zip_name[:-4] if zip_name.lower().endswith(".zip") else zip_name
    return stem + REPORT_SUFFIX


def report_path(zip_path: str | os.PathLike[str]) -> Path:
    """``OUT.report.html`` next to ``OUT.zip``."""
    path = Path(zip_path)
    return path.with_name(report_name(path.name))


@contextmanager
def _zip(archive: str | os.PathLike[str] | SeekableReader | zipfile.ZipFile) -> Iterator[zipfile.ZipFile]:
    if isinstance(archive, zipfile.ZipFile):
        yield archive
        return
    with zipfile.ZipFile(archive) as zf:
        yield zf


def _worst_first(series: list[Series]) -> list[Series]:
    def key(s: Series) -> float:
        worst = s.worst
        return math.inf if worst is None or worst.measure is None else worst.measure

    return sorted(series, key=key)


def _whole_below(record: Mapping[str, Any]) -> int:
    """Objects the pipeline read whole were under its streaming threshold: read them the same way."""
    budget = (record.get("timings") or {}).get("memoryBudget") or {}
    value = budget.get("streamThresholdBytes")
    return value if isinstance(value, int) and value > 0 else WHOLE_BELOW


def build_report(
    record: Mapping[str, Any],
    source: StudySource,
    archive: str | os.PathLike[str] | SeekableReader | zipfile.ZipFile,
    *,
    limits: Limits = Limits(),
    allow_burned_in: bool = False,
) -> bytes:
    """The report of a compressed study as UTF-8 HTML.

    ``record`` is the study's final result record (the fields it lacks are left out of the
    page); ``source`` the study it was made from (objects are found by the record's paths);
    ``archive`` the ZIP: a path, a seekable binary file (an S3 object behind ranged reads will
    do: only the directory and the shown entries are read) or an open ZipFile. Never raises for
    an image that cannot be shown: its panel says why. Images whose pixels may show text
    (screens, ultrasound: :mod:`pipeline.report.burned_in`) are measured but not drawn unless
    ``allow_burned_in``.
    """
    series = series_of(record)
    objects = {obj.path: obj for obj in source.list()[0]}
    whole_below = _whole_below(record)
    panels: dict[str, list[Panel]] = {}
    left = limits.image_bytes
    with _zip(archive) as zf:
        for s in _worst_first(series)[: limits.series]:
            shown = [
                render_panel(
                    label,
                    image,
                    source,
                    objects,
                    zf,
                    max_side=limits.thumbnail,
                    whole_below=whole_below,
                    allow_burned_in=allow_burned_in,
                )
                for label, image in s.picks()
            ]
            cost = sum(p.size for p in shown)
            if cost > left:
                for p in shown:
                    p.omit_images()
            else:
                left -= cost
            panels[s.folder] = shown
    return render_page(record, series, panels, rows=limits.rows, chart_points=limits.chart_points).encode("utf-8")
