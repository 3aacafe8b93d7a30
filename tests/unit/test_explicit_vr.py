"""An implicit VR source's private element whose value its dictionary VR cannot hold is written
as UN in the explicit VR output, its bytes unchanged (explicit_vr.py)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from pipeline.config import CompressionSettings
from pipeline.files.process import process_file


def _implicit_file(private_value: bytes) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "UN", private_value)  # the dictionary says CS (16 characters at most)
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=True)
    return out.getvalue()


def test_too_long_private_value_becomes_un(monkeypatch):
    value = b"IMAGE NUM 4 MOSAIC " * 2
    o = process_file("mosaic.dcm", _implicit_file(value), CompressionSettings(mode="lossless"))
    assert o.action == "compressed", o.reason
    monkeypatch.setattr(pydicom.config, "replace_un_with_known_vr", False)  # see the VR as written
    out = pydicom.dcmread(BytesIO(o.data))
    assert out[0x00291008].VR == "UN" and out[0x00291008].value == value


def test_a_private_value_that_fits_keeps_its_dictionary_vr():
    o = process_file("mosaic.dcm", _implicit_file(b"IMAGE NUM 4 "), CompressionSettings(mode="lossless"))
    out = pydicom.dcmread(BytesIO(o.data))
    assert out[0x00291008].VR == "CS" and out[0x00291008].value == "IMAGE NUM 4"
