"""Colour is encoded without the JPEG 2000 colour transform by default (RGB stays RGB, which every
consumer renders); the transform (YBR_RCT / YBR_ICT) is a setting. README "Interoperability"."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pipeline.config import CompressionSettings, settings_from_env
from pipeline.files.process import process_file
from tests.helpers.codestream import main_header


def _rgb_file() -> bytes:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([(x * 2) % 256, (y * 2) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 96, 128, 3, 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = img.tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("codec", ["j2k", "htj2k"])
@pytest.mark.parametrize("mode", ["lossless", "lossy"])
@pytest.mark.parametrize("transform", [False, True])
def test_rgb_photometric_matches_the_codestream(codec, mode, transform):
    """RGB output is labelled RGB and its codestream has no transform; with the setting it is
    YBR_RCT (lossless) / YBR_ICT (lossy) and the codestream says so (PS3.5 8.2.4)."""
    data = _rgb_file()
    settings = CompressionSettings(mode=mode, codec=codec, colour_transform=transform)
    o = process_file("rgb.dcm", data, settings)
    assert o.action == "compressed", o.reason
    out = pydicom.dcmread(BytesIO(o.data))
    expected = ("YBR_ICT" if mode == "lossy" else "YBR_RCT") if transform else "RGB"
    assert out.PhotometricInterpretation == expected
    assert out.PlanarConfiguration == 0
    frame = next(generate_frames(out.PixelData, number_of_frames=1))
    assert main_header(frame).colour_transform is transform
    src = pydicom.dcmread(BytesIO(data)).pixel_array
    if mode == "lossless":
        assert np.array_equal(pixel_array(out), src)


def test_the_transform_setting_changes_the_derived_uid_only_when_on():
    plain, on = CompressionSettings(), CompressionSettings(colour_transform=True)
    assert plain.fingerprint() != on.fingerprint()
    assert "colourTransform" not in plain.describe() and on.describe()["colourTransform"] is True
    assert settings_from_env({"COLOUR_TRANSFORM": "true"}).colour_transform
    assert not settings_from_env({}).colour_transform
