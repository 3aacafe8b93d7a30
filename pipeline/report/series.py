"""What the report shows, read off the result record alone: series, their images, the picks.

A series is a folder of the study (images are grouped by where they are, not by a header UID,
so nothing is read to group them and a series is named by its path). Each image is measured by
its range-PSNR (20 log10 of the source's value range over the RMSE: REFERENCE.md 5), or by its
PSNR in records that predate range-PSNR; bit-exact images measure +inf. Per series the report
shows the worst image (lowest measure) and the median one, so a reader sees both the floor of
the quality and what is typical.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Shown for images at the study folder's top level.
TOP_LEVEL = "(study folder)"


@dataclass(frozen=True)
class Image:
    """One compressed file of the record, with what the report needs of it."""

    path: str
    entry: str  # its name in the ZIP
    frames: int
    ratio: float | None
    range_psnr: float | None
    psnr: float | None
    max_error: int | None
    bit_exact: bool
    floor: Mapping[str, Any] | None

    @property
    def measure(self) -> float | None:
        """The quality the picks and the chart go by: range-PSNR, else PSNR; +inf when bit-exact."""
        if self.bit_exact:
            return math.inf
        return self.range_psnr if self.range_psnr is not None else self.psnr

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Image:
        check = row.get("verification") or {}
        return cls(
            path=str(row["path"]),
            entry=str(row.get("zipEntry") or row["path"]),
            frames=int(row.get("frames") or 1),
            ratio=_number(row.get("ratio")),
            range_psnr=_number(check.get("rangePsnrDb")),
            psnr=_number(check.get("psnrDb")),
            max_error=check.get("maxAbsError") if isinstance(check.get("maxAbsError"), int) else None,
            bit_exact=check.get("status") == "bit-exact",
            floor=row.get("floor") if isinstance(row.get("floor"), Mapping) else None,
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Series:
    """The compressed images of one folder, in the record's (natural) order."""

    folder: str
    images: list[Image] = field(default_factory=list)

    @property
    def measured(self) -> list[Image]:
        """The images by measure, worst first (ties: natural order); unmeasured ones left out."""
        return sorted((i for i in self.images if i.measure is not None), key=lambda i: i.measure)  # type: ignore[arg-type,return-value]

    @property
    def worst(self) -> Image | None:
        measured = self.measured
        return measured[0] if measured else None

    @property
    def median(self) -> Image:
        """The median image by measure (upper median), or the middle one in order when none is measured."""
        measured = self.measured
        return measured[len(measured) // 2] if measured else self.images[len(self.images) // 2]

    def picks(self) -> list[tuple[str, Image]]:
        """(label, image) to show: the worst and the median, once when they are the same image."""
        worst, median = self.worst, self.median
        if worst is None:
            return [("middle image (not measured)", median)]
        if len(self.images) == 1:
            return [("the only image", worst)]
        if worst.path == median.path:
            return [("worst and median", worst)]
        return [("worst", worst), ("median", median)]


def folder_of(path: str) -> str:
    return posixpath.dirname(path) or TOP_LEVEL


def series_of(record: Mapping[str, Any]) -> list[Series]:
    """The record's compressed images grouped by folder, folders in the order they first appear
    (the record lists files in the ZIP's natural order, so a folder's files are together)."""
    by_folder: dict[str, Series] = {}
    for row in record.get("files") or []:
        if row.get("action") != "compressed":
            continue
        folder = folder_of(str(row["path"]))
        by_folder.setdefault(folder, Series(folder)).images.append(Image.of(row))
    return list(by_folder.values())


def floor_db(record: Mapping[str, Any]) -> float | None:
    """The quality floor the study was compressed with (settings, else any file's), or None."""
    value = _number((record.get("settings") or {}).get("minPsnrDb"))
    if value is not None:
        return value
    for row in record.get("files") or []:
        floor = row.get("floor")
        if isinstance(floor, Mapping) and _number(floor.get("minPsnrDb")) is not None:
            return _number(floor.get("minPsnrDb"))
    return None
