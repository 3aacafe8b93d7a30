"""One picked image as the report shows it: original, compressed and difference thumbnails.

Both frames are decoded (the same frame of the source object and of its ZIP entry), shrunk,
put through one view (the original's window) and encoded as PNG data URIs; the difference is
amplified by the power of two that shows it best, and the panel says by how much. Nothing fails
the report: an image that cannot be shown becomes a panel with the reason, in words free of
header values, and an image whose pixels may show text (:mod:`pipeline.report.burned_in`) is
not drawn unless asked for.
"""

from __future__ import annotations

import base64
import zipfile
from dataclasses import dataclass

from pipeline.files.errors import describe_error
from pipeline.report.burned_in import burned_in_risk
from pipeline.report.frames import FrameReadError, archive_frame, source_frame
from pipeline.report.images import (
    difference,
    difference_gain,
    display,
    shrink,
    shrink_difference,
    shrink_factor,
    view_for,
)
from pipeline.report.png import encode_png
from pipeline.report.series import Image
from pipeline.study.listing import StudyObject
from pipeline.study.source import StudySource

#: The side of the square each thumbnail is fitted into on the page (CSS pixels).
DISPLAY_SIDE = 256


@dataclass
class Panel:
    """What the page needs to show one picked image."""

    label: str
    image: Image
    frame: int = 0
    frames: int = 1
    original: str | None = None  # data: URIs
    compressed: str | None = None
    difference: str | None = None
    identical: bool = False
    gain: int = 1  # the difference's amplification
    width: int = DISPLAY_SIDE  # display size on the page, aspect kept
    height: int = DISPLAY_SIDE
    enlarged: bool = False  # shown larger than its pixels: drawn pixelated, not blurred
    window: str = ""
    error: str | None = None
    withheld: str | None = None  # why the pixels are not drawn (they may show text)
    images_omitted: bool = False

    @property
    def size(self) -> int:
        """Bytes the panel's images add to the page."""
        return sum(len(u) for u in (self.original, self.compressed, self.difference) if u)

    def omit_images(self) -> None:
        self.original = self.compressed = self.difference = None
        self.images_omitted = True


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_panel(
    label: str,
    image: Image,
    source: StudySource,
    objects: dict[str, StudyObject],
    archive: zipfile.ZipFile,
    *,
    max_side: int,
    whole_below: int,
    allow_burned_in: bool = False,
) -> Panel:
    """The panel of ``image``: its middle frame from the study and from the ZIP."""
    panel = Panel(label, image)
    obj = objects.get(image.path)
    if obj is None:
        panel.error = "the source object is no longer in the study"
        return panel
    try:
        original = source_frame(source, obj, whole_below=whole_below)
        panel.frame, panel.frames = original.index, original.count
        risk = None if allow_burned_in else burned_in_risk(original.header)
        if risk:
            panel.withheld = f"{risk}: its pixels may show names or dates, so they are not drawn"
            return panel
        compressed = archive_frame(archive, image.entry, original.index)
        if compressed.pixels.shape != original.pixels.shape:
            raise FrameReadError(
                f"the compressed frame is {compressed.pixels.shape}, the original {original.pixels.shape}"
            )
        rows, columns = original.pixels.shape[:2]
        factor = shrink_factor(rows, columns, max_side)
        small_original, small_compressed = shrink(original.pixels, factor), shrink(compressed.pixels, factor)
        error = shrink_difference(original.pixels, compressed.pixels, factor)
        view = view_for(original.header, original.index, small_original)
        del original, compressed  # the full frames: only the thumbnails go on
    except FrameReadError as exc:
        panel.error = str(exc)
        return panel
    except Exception as exc:  # noqa: BLE001 - any decoder failure: the report goes on without this image
        panel.error = f"could not be shown: {describe_error(exc)}"
        return panel
    panel.window = view.describe()
    panel.original = _uri(encode_png(display(small_original, view)))
    panel.compressed = _uri(encode_png(display(small_compressed, view)))
    panel.identical = not error.any()
    if not panel.identical:
        panel.gain = difference_gain(error, view)
        panel.difference = _uri(encode_png(difference(error, view, panel.gain)))
    thumb_rows, thumb_columns = small_original.shape[:2]
    scale = DISPLAY_SIDE / max(thumb_rows, thumb_columns)
    panel.width, panel.height = max(1, round(thumb_columns * scale)), max(1, round(thumb_rows * scale))
    panel.enlarged = scale >= 1.5
    return panel


def difference_caption(panel: Panel) -> str:
    """How to read the difference image (its scale), in words."""
    if panel.identical:
        return "no difference: identical pixels"
    whole = "the full scale" if panel.window.startswith("colour") else "the window width"
    share = whole if panel.gain == 1 else f"1/{panel.gain} of {whole}"
    return f"|difference| \u00d7{panel.gain}: white = error \u2265 {share}"
