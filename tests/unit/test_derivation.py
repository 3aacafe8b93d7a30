"""Lossy outputs say where they came from (PS3.3 C.7.6.1 / C.7.6.16.2.6) and who wrote them
(PS3.10 7.1); lossless outputs keep their UID and get no derivation."""

from __future__ import annotations

import re
from io import BytesIO

import pydicom
import pytest
from pydicom.multival import MultiValue

from pipeline.config import CompressionSettings, SettingsError, settings_from_env
from pipeline.files.derivation import MR_PULSE_SEQUENCE, _appended, description
from pipeline.files.identity import implementation_class_uid, implementation_version_name
from pipeline.files.process import process_file


def _compress(corpus, rel: str, settings: CompressionSettings) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    data = (corpus / rel).read_bytes()
    o = process_file(rel, data, settings)
    assert o.action == "compressed", o.reason
    return pydicom.dcmread(BytesIO(data)), pydicom.dcmread(BytesIO(o.data))


def test_single_frame_lossy_derivation(fixture_study):
    data = (fixture_study / "CT1" / "01.dcm").read_bytes()
    src = pydicom.dcmread(BytesIO(data))
    out = pydicom.dcmread(BytesIO(process_file("01.dcm", data, CompressionSettings()).data))
    assert out.ImageType[0] == "DERIVED"
    assert out.DerivationDescription.startswith("Lossy compression with JPEG 2000 (ISO_15444_1), ratio ")
    ratio = out.LossyImageCompressionRatio
    ratio = ratio[-1] if isinstance(ratio, MultiValue) else ratio
    said = re.search(r"ratio ([0-9.]+):1$", out.DerivationDescription)
    assert said and float(said.group(1)) == pytest.approx(float(ratio), abs=0.06)
    code = out.DerivationCodeSequence[-1]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("113040", "DCM", "Lossy Compression")
    ref = out.SourceImageSequence[-1]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (src.SOPClassUID, src.SOPInstanceUID)
    purpose = ref.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
        "121320",
        "DCM",
        "Uncompressed predecessor",
    )
    assert out.SOPInstanceUID != src.SOPInstanceUID


def test_lossless_gets_no_derivation_but_the_writer_identity(fixture_study):
    data = (fixture_study / "CT1" / "01.dcm").read_bytes()
    src = pydicom.dcmread(BytesIO(data))
    out = pydicom.dcmread(BytesIO(process_file("01.dcm", data, CompressionSettings(mode="lossless")).data))
    assert "DerivationCodeSequence" not in out and "SourceImageSequence" not in out
    assert out.SOPInstanceUID == src.SOPInstanceUID
    assert out.file_meta.ImplementationClassUID == implementation_class_uid()
    assert out.file_meta.ImplementationVersionName == implementation_version_name()
    assert src.file_meta.get("ImplementationClassUID") != out.file_meta.ImplementationClassUID


def test_enhanced_mr_derivation_goes_into_the_functional_groups(corpus):
    src, out = _compress(corpus, "multiframe/6_1.dcm", CompressionSettings())
    n = int(src.NumberOfFrames)
    for index, group in enumerate(out.PerFrameFunctionalGroupsSequence, start=1):
        assert group.MRImageFrameTypeSequence[0].FrameType[0] == "DERIVED"
        item = group.DerivationImageSequence[-1]
        assert item.DerivationCodeSequence[0].CodeValue == "113040"
        ref = item.SourceImageSequence[0]
        assert (ref.ReferencedSOPInstanceUID, ref.ReferencedFrameNumber) == (src.SOPInstanceUID, index)
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    assert len(out.PerFrameFunctionalGroupsSequence) == n
    evidence = out.SourceImageEvidenceSequence[-1]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert "DerivationDescription" not in out and "SourceImageSequence" not in out  # not in the Enhanced MR IOD
    # ORIGINAL -> DERIVED: the MR Pulse Sequence attributes the IOD allows only for ORIGINAL go
    assert any(tag in src for tag in MR_PULSE_SEQUENCE)
    assert not any(tag in out for tag in MR_PULSE_SEQUENCE)


def test_an_already_derived_enhanced_mr_keeps_its_attributes(corpus):
    src, out = _compress(corpus, "multiframe/enhanced-mr-siemens-xa-3frame.dcm", CompressionSettings())
    kept = [tag for tag in MR_PULSE_SEQUENCE if tag in src]
    assert kept and all(out[tag].value == src[tag].value for tag in kept)


def test_description_is_appended_within_1024_characters():
    ours = description("ISO_15444_15", 9.84)
    assert ours == "Lossy compression with High-Throughput JPEG 2000 (ISO_15444_15), ratio 9.8:1"
    assert _appended("", ours) == ours
    assert _appended("Resampled", ours) == "Resampled; " + ours
    long = _appended("x" * 2000, ours)
    assert len(long) == 1024 and long.endswith("; " + ours)


def test_uid_root_is_configurable_and_deterministic(fixture_study):
    data = (fixture_study / "CT1" / "01.dcm").read_bytes()
    settings = settings_from_env({"UID_ROOT": "1.2.3.4"})
    first = pydicom.dcmread(BytesIO(process_file("01.dcm", data, settings).data))
    again = pydicom.dcmread(BytesIO(process_file("01.dcm", data, settings).data))
    assert first.SOPInstanceUID.startswith("1.2.3.4.") and first.SOPInstanceUID == again.SOPInstanceUID
    assert first.file_meta.ImplementationClassUID == implementation_class_uid("1.2.3.4.")
    assert first.file_meta.ImplementationClassUID.startswith("1.2.3.4.")
    default = pydicom.dcmread(BytesIO(process_file("01.dcm", data, CompressionSettings()).data))
    assert default.SOPInstanceUID.startswith("1.2.826.0.1.3680043.8.498.")
    assert len(implementation_version_name()) <= 16
    with pytest.raises(SettingsError):
        CompressionSettings(uid_root="1.02.3")
