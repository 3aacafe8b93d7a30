"""What a lossy output says about where it came from (PS3.3 C.7.6.1, C.7.6.16.2.6, PS3.16 CID 7203
and CID 7202), the way dcm4che marks its lossy derivatives.

Single-frame IODs get, in the General Image module: Derivation Description (method and ratio,
appended to one already there), Derivation Code Sequence (DCM 113040 "Lossy Compression") and
Source Image Sequence (the original instance, purpose DCM 121320 "Uncompressed predecessor").
Enhanced multi-frame IODs keep those in the Derivation Image functional group instead (their
IODs have no General Image module): one item per frame referencing the same frame of the
original, or one shared item when the source already keeps derivation in the shared group, with
the original in Source Image Evidence Sequence as the IOD then requires; and value 1 of every Frame Type (MR/CT/PET/... Image Frame Type Sequence) becomes DERIVED, like
Image Type.

Attributes that PS3.3 makes Type 1C "Required if Image Type Value 1 is ORIGINAL or MIXED"
without "may be present otherwise" must then go (PS3.5 7.4: a 1C whose condition is false shall
not be present): for Enhanced MR these are the MR Pulse Sequence module's (C.8.13.4). They are
removed only when this edit is what turned ORIGINAL into DERIVED; a source that was already
DERIVED keeps them as it had them.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

#: (code value, scheme, meaning): CID 7203 "Image Derivation".
LOSSY_COMPRESSION = ("113040", "DCM", "Lossy Compression")
#: CID 7202 "Source Image Purposes of Reference".
UNCOMPRESSED_PREDECESSOR = ("121320", "DCM", "Uncompressed predecessor")
_METHOD_NAMES = {"ISO_15444_1": "JPEG 2000", "ISO_15444_15": "High-Throughput JPEG 2000"}
_ST_MAX = 1024
_SHARED, _PER_FRAME = 0x52009229, 0x52009230
_DERIVATION_DESCRIPTION, _DERIVATION_CODES, _SOURCE_IMAGES = 0x00082111, 0x00089215, 0x00082112
_SOURCE_EVIDENCE = 0x00089154
#: Enhanced MR family (Enhanced MR, MR Spectroscopy, Enhanced MR Color).
_ENHANCED_MR = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.2", "1.2.840.10008.5.1.4.1.1.4.3"}
#: MR Pulse Sequence module (PS3.3 C.8.13.4): Type 1C on Image Type Value 1 ORIGINAL or MIXED.
MR_PULSE_SEQUENCE = (
    0x00189005,  # Pulse Sequence Name
    0x00189008,  # Echo Pulse Sequence
    0x00189011,  # Multiple Spin Echo
    0x00189012,  # Multi-planar Excitation
    0x00189014,  # Phase Contrast
    0x00189015,  # Time of Flight Contrast
    0x00189016,  # Spoiling
    0x00189017,  # Steady State Pulse Sequence
    0x00189018,  # Echo Planar Pulse Sequence
    0x00189024,  # Saturation Recovery
    0x00189025,  # Spectrally Selected Suppression
    0x00189029,  # Oversampling Phase
    0x00189032,  # Geometry of k-Space Traversal
    0x00189033,  # Segmented k-Space Traversal
    0x00189034,  # Rectilinear Phase Encode Reordering
    0x00189093,  # Number of k-Space Trajectories
    0x00189094,  # Coverage of k-Space
    0x00189250,  # Arterial Spin Labeling Contrast
    0x00189090,  # Velocity Encoding Acquisition Sequence
    0x00180023,  # MR Acquisition Type
    0x00189172,  # Bulk Motion Compensation Technique (Bulk Motion Synchronization, C.7.6.18.3)
)


def description(method: str, ratio: float) -> str:
    """The Derivation Description of one lossy compression, e.g. "Lossy compression with JPEG 2000
    (ISO_15444_1), ratio 9.8:1"."""
    return f"Lossy compression with {_METHOD_NAMES.get(method, method)} ({method}), ratio {ratio:.1f}:1"


def _appended(existing: Any, text: str) -> str:
    """``text`` after an existing description, within ST's 1024 characters (the older text is
    shortened, never ours)."""
    old = str(existing or "").strip()
    if not old:
        return text[:_ST_MAX]
    room = _ST_MAX - len(text) - 2
    return (old[:room] + "; " + text) if room > 0 else text[:_ST_MAX]


def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _source_item(sop_class: str, sop_instance: str, frame: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if frame is not None:
        item.ReferencedFrameNumber = frame
    item.PurposeOfReferenceCodeSequence = Sequence([_code(UNCOMPRESSED_PREDECESSOR)])
    return item


def _append(ds: Dataset, keyword: str, item: Dataset) -> None:
    existing = ds.get(keyword)
    setattr(ds, keyword, Sequence(list(existing or []) + [item]))


def _evidence_item(ds: Dataset, sop_class: str, sop_instance: str) -> Dataset:
    """Source Image Evidence (Hierarchical SOP Instance Reference, C.17.2.1): required in enhanced
    IODs once a functional group's Source Image Sequence names an instance."""
    sop = Dataset()
    sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID = sop_class, sop_instance
    series = Dataset()
    series.SeriesInstanceUID = str(ds.get("SeriesInstanceUID", ""))
    series.ReferencedSOPSequence = Sequence([sop])
    study = Dataset()
    study.StudyInstanceUID = str(ds.get("StudyInstanceUID", ""))
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def _derivation_item(text: str, sop_class: str, sop_instance: str, frame: int | None) -> Dataset:
    item = Dataset()
    item.DerivationDescription = text
    item.DerivationCodeSequence = Sequence([_code(LOSSY_COMPRESSION)])
    if sop_instance:
        item.SourceImageSequence = Sequence([_source_item(sop_class, sop_instance, frame)])
    return item


def is_enhanced(ds: Dataset) -> bool:
    """A multi-frame IOD with functional groups (Enhanced CT/MR/PET/XA, WSI, ...)."""
    return _SHARED in ds or _PER_FRAME in ds


def _frame_types_derived(groups: Any) -> bool:
    """Value 1 of every Frame Type in these functional group items -> DERIVED; True if any changed."""
    changed = False
    for group in groups or []:
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for item in elem.value:
                    values = list(item.get("FrameType") or [])
                    if values and values[0] != "DERIVED":
                        values[0] = "DERIVED"
                        item.FrameType = values
                        changed = True
    return changed


def mark_lossy_derivation(
    ds: Dataset, *, method: str, ratio: float, source_sop_instance: str, was_original: bool
) -> set[int]:
    """Add the derivation of one lossy compression to ``ds`` (before its SOP Instance UID is
    replaced: ``source_sop_instance`` is the original's); return the top-level tags set or removed."""
    text = description(method, ratio)
    sop_class = str(ds.get("SOPClassUID", ""))
    changed: set[int] = set()
    if is_enhanced(ds):
        shared = ds.get("SharedFunctionalGroupsSequence")
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        if _frame_types_derived(shared):
            changed.add(_SHARED)
        if _frame_types_derived(per_frame):
            changed.add(_PER_FRAME)
        if per_frame and not (shared and "DerivationImageSequence" in shared[0]):
            for index, group in enumerate(per_frame, start=1):
                _append(group, "DerivationImageSequence", _derivation_item(text, sop_class, source_sop_instance, index))
            changed.add(_PER_FRAME)
        else:
            if not shared:
                ds.SharedFunctionalGroupsSequence = shared = Sequence([Dataset()])
            _append(shared[0], "DerivationImageSequence", _derivation_item(text, sop_class, source_sop_instance, None))
            changed.add(_SHARED)
        if source_sop_instance:
            _append(ds, "SourceImageEvidenceSequence", _evidence_item(ds, sop_class, source_sop_instance))
            changed.add(_SOURCE_EVIDENCE)
        return changed | _drop_original_only(ds, sop_class, was_original)
    ds.DerivationDescription = _appended(ds.get("DerivationDescription"), text)
    _append(ds, "DerivationCodeSequence", _code(LOSSY_COMPRESSION))
    changed |= {_DERIVATION_DESCRIPTION, _DERIVATION_CODES}
    if source_sop_instance:
        _append(ds, "SourceImageSequence", _source_item(sop_class, source_sop_instance, None))
        changed.add(_SOURCE_IMAGES)
    return changed | _drop_original_only(ds, sop_class, was_original)


def _drop_original_only(ds: Dataset, sop_class: str, was_original: bool) -> set[int]:
    """Remove what the IOD allows only while Image Type Value 1 is ORIGINAL or MIXED (by SOP
    Class, not by layout: an Enhanced MR without functional groups is still one)."""
    removed: set[int] = set()
    if was_original and sop_class in _ENHANCED_MR:
        for tag in MR_PULSE_SEQUENCE:
            if tag in ds:
                del ds[tag]
                removed.add(tag)
    return removed
