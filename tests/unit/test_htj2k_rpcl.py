"""HTJ2K lossless is written as .202 (HTJ2K Lossless RPCL, what AWS HealthImaging stores): RPCL
progression, TLM markers, enough decomposition levels that the lowest resolution is <= 64 px;
lossy as .203 with the same layout and Lossy Image Compression Method ISO_15444_15."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from pipeline.codec.htj2k import decomposition_levels
from pipeline.config import CompressionSettings
from pipeline.files.process import process_file
from tests.helpers.codestream import main_header


@pytest.mark.parametrize(
    ("rows", "columns", "levels"), [(32, 32, 5), (512, 512, 5), (2048, 1024, 5), (4096, 3000, 6), (64, 9000, 8)]
)
def test_levels_bring_the_lowest_resolution_to_64(rows, columns, levels):
    assert decomposition_levels(rows, columns) == levels
    assert -(-max(rows, columns) // 2**levels) <= 64


@pytest.mark.parametrize("mode", ["lossless", "lossy"])
def test_htj2k_outputs_are_rpcl_with_tlm(mode, fixture_study):
    data = (fixture_study / "CT1" / "01.dcm").read_bytes()
    o = process_file("01.dcm", data, CompressionSettings(mode=mode, codec="htj2k"))
    assert o.action == "compressed", o.reason
    out = pydicom.dcmread(BytesIO(o.data))
    assert out.file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.4.202" if mode == "lossless" else "1.2.840.10008.1.2.4.203"
    )
    header = main_header(next(generate_frames(out.PixelData, number_of_frames=1)))
    assert (header.progression, header.tlm, header.ht) == ("RPCL", True, True)
    assert -(-max(header.width, header.height) // 2**header.levels) <= 64
    src = pydicom.dcmread(BytesIO(data))
    if mode == "lossless":
        assert np.array_equal(pixel_array(out), src.pixel_array)
    else:
        assert out.LossyImageCompressionMethod == "ISO_15444_15"
