"""Implicit -> explicit VR: private elements whose value the VR from pydicom's private dictionary
cannot hold are written as UN.

An implicit VR source carries no VRs; reading it, pydicom takes a private element's VR from its
private dictionary when it knows the creator. Vendors do not always keep to those VRs (a Siemens
"CS" holding 40 characters), and the explicit VR output would then declare a VR its value breaks
(dciodvfy: an error the source did not have; past 64 KiB, a length the 16-bit field cannot hold).
UN (PS3.5 6.2.2) keeps the bytes exactly and claims nothing.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

#: Maximum length of one value, in bytes (PS3.5 Table 6.2-1).
_MAX_VALUE = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "PN": 64 * 3 + 2,
    "SH": 16,
    "ST": 1024,
    "TM": 14,
    "UI": 64,
}


def _too_long(vr: str, raw: bytes) -> bool:
    limit = _MAX_VALUE.get(vr)
    if limit is None:
        return False
    values = [raw] if vr in ("LT", "ST") else raw.split(b"\\")
    return any(len(v.rstrip(b" \x00")) > limit for v in values)


def private_values_as_un(ds: Dataset) -> set[int]:
    """For an implicit VR source: turn top-level private elements whose value is too long for
    their dictionary VR into UN; return their tags."""
    if not ds.original_encoding[0]:
        return set()
    changed: set[int] = set()
    for tag in list(ds.keys()):
        if not tag.is_private or tag.is_private_creator:
            continue
        raw = ds._dict[tag]
        if isinstance(raw, RawDataElement):
            if raw.value is None:
                continue
            value = bytes(raw.value)
        else:  # already converted by an earlier read: its text, as stored
            items = raw.value if isinstance(raw.value, (list, tuple)) or hasattr(raw.value, "_list") else [raw.value]
            if not all(isinstance(v, str) for v in items):
                continue
            value = "\\".join(items).encode("latin-1", errors="replace")
            value += b" " * (len(value) % 2)
        vr = ds[tag].VR  # converted: the dictionary's VR (UN when the creator is unknown)
        if _too_long(vr, value):
            ds[tag] = DataElement(tag, "UN", value)
            changed.add(int(tag))
    return changed
