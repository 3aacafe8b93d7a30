"""The visual quality report's parts (pipeline/report), each on its own: the PNG encoder against an
independent reader, windowing (MONOCHROME1 inverted), the difference's gain, shrinking, a frame read
alone as pydicom decodes it, what may show burned-in text, names and chart ticks.

The report built from real CLI runs (the corpus's, the fixture's) is in tests/e2e/test_report.py.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.report import report_name, report_path
from pipeline.report.burned_in import burned_in_risk
from pipeline.report.charts import nice_ticks
from pipeline.report.frames import frame_from_bytes, frame_from_stream
from pipeline.report.images import difference, difference_gain, display, shrink, shrink_difference, view_for
from pipeline.report.png import encode_png
from tests.helpers.png import read_png

# --------------------------------------------------------------------------- PNG, windowing, shrinking


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64, 3), (5, 300, 3)])
def test_png_round_trips_through_an_independent_reader(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    noisy = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = (np.indices(shape[:2]).sum(axis=0) % 256).astype(np.uint8)
    smooth = np.repeat(smooth[..., None], 3, axis=2) if len(shape) == 3 else smooth
    for pixels in (noisy, smooth):  # noise keeps filter None, a ramp picks Sub/Up/Paeth
        assert np.array_equal(read_png(encode_png(pixels)), pixels)
    if smooth.size > 100:
        assert len(encode_png(smooth)) < len(encode_png(noisy))


def test_png_refuses_what_it_cannot_write() -> None:
    for bad in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError):
            encode_png(bad)


def _ct_header(**extra: Any) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    for k, v in extra.items():
        setattr(ds, k, v)
    return ds


def test_the_file_s_first_window_applies_to_rescaled_values() -> None:
    ds = _ct_header(WindowCenter=[40, 300], WindowWidth=[80, 1500])
    stored = np.array(
        [[1024 - 100, 1024 + 0, 1024 + 40, 1024 + 79, 1024 + 500]], dtype=np.int16
    )  # HU -100, 0, 40, 79, 500
    view = view_for(ds, 0, stored)
    assert (view.window_from, view.center, view.width) == ("file", 40, 80)
    grey = display(stored, view)
    assert grey[0, 0] == 0 and grey[0, -1] == 255
    assert abs(int(grey[0, 2]) - 128) <= 2  # the centre is mid-grey
    assert grey[0, 1] < grey[0, 2] < grey[0, 3]
    assert "window from the file" in view.describe() and "40" not in view.describe()  # where, never the values


def test_monochrome1_is_shown_inverted_and_a_window_comes_from_the_data_when_absent() -> None:
    stored = np.arange(0, 1000, dtype=np.uint16).reshape(10, 100)
    mono2 = view_for(_ct_header(RescaleIntercept=0), 0, stored)
    mono1 = view_for(_ct_header(RescaleIntercept=0, PhotometricInterpretation="MONOCHROME1"), 0, stored)
    assert mono2.window_from == mono1.window_from == "data" and mono1.invert and not mono2.invert
    assert np.array_equal(display(stored, mono1), 255 - display(stored, mono2))
    grey = display(stored, mono2)
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and 100 < grey[5, 0] < 160  # 1st-99th percentile stretched


def test_enhanced_objects_take_their_window_from_the_functional_groups(corpus: Path) -> None:
    path = corpus / "multiframe/enhanced-mr-siemens-xa-3frame.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "WindowCenter" not in ds
    frame = frame_from_bytes(path.read_bytes())
    assert view_for(frame.header, frame.index, frame.pixels).window_from == "file"


def test_the_difference_is_amplified_by_the_power_of_two_that_shows_it() -> None:
    view = view_for(_ct_header(WindowCenter=40, WindowWidth=400), 0, np.zeros((2, 2), np.int16))
    small = np.full((8, 8), 2.0)  # 2 HU in a 400 HU window: x64 is 82 grey levels
    big = np.full((8, 8), 300.0)  # 3/4 of the window: x1, saturating nothing
    assert difference_gain(small, view) == 64 and difference_gain(big, view) == 1
    assert difference(big, view, 1)[0, 0] == round(300 / 400 * 255)
    assert difference(small * 0, view, 64).max() == 0  # black is no error


def test_shrinking_keeps_means_and_a_single_pixel_error() -> None:
    frame = np.arange(512 * 512, dtype=np.int32).reshape(512, 512) % 1000
    assert np.allclose(shrink(frame, 2), frame.reshape(256, 2, 256, 2).mean(axis=(1, 3)))
    odd = np.ones((301, 203, 3), np.uint16)
    assert shrink(odd, 2).shape == (150, 101, 3)
    other = frame.copy()
    other[300, 301] += 7
    error = shrink_difference(frame, other, 4)
    assert error.shape == (128, 128) and error[75, 75] == 7 and error.sum() == 7


# --------------------------------------------------------------------------- frames, as pydicom decodes them


#: Corpus files the pipeline re-encodes, one per way of storing pixels that the report reads.
STORED_KINDS = [
    "multiframe/emri_small.dcm",  # native multi-frame
    "edge-cases/transfer-syntax/image_dfl.dcm",  # deflated
    "edge-cases/transfer-syntax/MR_small_RLE.dcm",  # RLE
    "edge-cases/transfer-syntax/emri_small_jpeg_2k_lossless.dcm",  # J2K multi-frame
    "edge-cases/transfer-syntax/JPEG-LL.dcm",  # JPEG lossless
    "edge-cases/photometric-bitdepth/dx_image.dcm",  # MONOCHROME1
    "edge-cases/photometric-bitdepth/SC_rgb_16bit.dcm",  # RGB 16-bit
]


@pytest.mark.parametrize("name", STORED_KINDS)
def test_a_frame_read_alone_is_pixel_array_s(corpus: Path, name: str) -> None:
    path = corpus / name
    count = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    expected = pixel_array(pydicom.dcmread(path), index=count // 2)
    with open(path, "rb") as fh:
        streamed = frame_from_stream(fh)
    whole = frame_from_bytes(path.read_bytes())
    assert streamed.index == whole.index == count // 2 and streamed.count == count
    assert np.array_equal(streamed.pixels, expected) and np.array_equal(whole.pixels, expected)


def test_ybr_full_is_shown_as_rgb_by_either_route() -> None:
    from pydicom.pixels import convert_color_space

    rgb = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.3.4"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 40, 48, 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    expected = pixel_array(ds)  # YBR_FULL -> RGB
    assert np.abs(expected.astype(int) - rgb).max() <= 3
    buffer.seek(0)
    assert np.array_equal(frame_from_stream(buffer).pixels, expected)
    assert np.array_equal(frame_from_bytes(buffer.getvalue()).pixels, expected)


def test_images_that_may_show_text_are_recognised(corpus: Path) -> None:
    def risk(name: str) -> str | None:
        return burned_in_risk(pydicom.dcmread(corpus / name, stop_before_pixels=True))

    assert risk("ct-series/philips-ingenuity-phantom-study/S21610/S4010/I40")  # a dose screen that says NO
    assert risk("edge-cases/photometric-bitdepth/examples_rgb_color.dcm")  # ultrasound
    assert risk("ct-series/ge-hispeed-head-tilt/01.dcm") is None
    assert risk("multiframe/emri_small.dcm") is None
    assert burned_in_risk(_ct_header(BurnedInAnnotation="YES"))


# --------------------------------------------------------------------------- small parts


def test_report_names_follow_the_zip() -> None:
    assert report_name("compressed/clinic-1/study.zip") == "compressed/clinic-1/study.report.html"
    assert report_name("out/x.ZIP") == "out/x.report.html"
    assert report_path(Path("/tmp/out/study.zip")) == Path("/tmp/out/study.report.html")


def test_chart_ticks_cover_the_data() -> None:
    for low, high in ((0, 50.4), (27.3, 31.2), (16.7, 86.0), (45.0, 45.0), (0, 0.3)):
        ticks = nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and 2 <= len(ticks) <= 12, (low, high, ticks)
        assert all(math.isclose(b - a, ticks[1] - ticks[0]) for a, b in itertools.pairwise(ticks))
