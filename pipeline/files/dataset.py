"""Dataset edits for re-encoded pixel data (REFERENCE.md section 2), and nothing else.

Only the elements the standard requires to change are touched: transfer syntax, Pixel Data,
Photometric Interpretation and Planar Configuration for colour, the file meta's implementation
identity (``identity.py``), and for lossy output the lossy attributes, Image Type value 1, the
derivation (``derivation.py``) and the SOP Instance UIDs. Private tags, character set, padding
values and VRs are left as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from io import BytesIO
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from pipeline.codec.base import FrameCodec
from pipeline.files.derivation import mark_lossy_derivation
from pipeline.files.explicit_vr import private_values_as_un
from pipeline.files.identity import DEFAULT_UID_ROOT, derived_uid, implementation_class_uid, implementation_version_name
from pipeline.files.splice import splice_part10

_MAX_BOT_BYTES = 0xFFFFFFFF
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _format_ds(value: float) -> str:
    """A Decimal String (max 16 characters) for a compression ratio."""
    return f"{value:.2f}"[:16]


def swap_big_endian_words(ds: Dataset) -> None:
    """Byte-swap OW/OF/OL/OD/OV values, which pydicom cannot convert by itself to little endian."""
    for elem in ds.iterall():
        width = _SWAP_WIDTH.get(elem.VR)
        if width and elem.tag != 0x7FE00010 and isinstance(elem.value, (bytes, bytearray)) and elem.value:
            raw = bytes(elem.value)
            if len(raw) % width == 0:
                elem.value = np.frombuffer(raw, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def has_unknown_vr(ds: Dataset) -> bool:
    """UN values have no known structure, so their byte order cannot be fixed."""
    return any(elem.VR == "UN" for elem in ds.iterall())


def edit_for_output(
    ds: FileDataset,
    codec: FrameCodec,
    *,
    photometric: str,
    ratio: float,
    settings_fingerprint: str,
    source_id: str,
    uid_root: str = DEFAULT_UID_ROOT,
) -> set[int]:
    """Set what re-encoding changes (REFERENCE.md section 2) on ``ds``, Pixel Data aside; return
    the dataset tags set or removed. ``source_id`` stands in for a missing SOP Instance UID when
    deriving the new one; new UIDs are made under ``uid_root``."""
    changed: set[int] = private_values_as_un(ds)
    # (UID(...): pydicom types the file meta's UIDs as UID; it makes one of a str value anyway.)
    ds.file_meta.TransferSyntaxUID = UID(codec.transfer_syntax)
    # PS3.10 7.1: the implementation that wrote the file, i.e. this one, not the source's.
    ds.file_meta.ImplementationClassUID = UID(implementation_class_uid(uid_root))
    ds.file_meta.ImplementationVersionName = implementation_version_name()
    if photometric != ds.PhotometricInterpretation:
        ds.PhotometricInterpretation = photometric
        changed.add(0x00280004)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0
        changed.add(0x00280006)
    if codec.lossy:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = _as_list(ds.get("LossyImageCompressionRatio")) + [_format_ds(ratio)]
        ds.LossyImageCompressionMethod = _as_list(ds.get("LossyImageCompressionMethod")) + [codec.method]
        changed |= {0x00282110, 0x00282112, 0x00282114}
        image_type = _as_list(ds.get("ImageType"))
        was_original = bool(image_type) and str(image_type[0]).upper() in ("ORIGINAL", "MIXED")
        if image_type:
            image_type[0] = "DERIVED"
            ds.ImageType = image_type if len(image_type) > 1 else image_type[0]
            changed.add(0x00080008)
        old_uid = str(ds.get("SOPInstanceUID", "") or ds.file_meta.get("MediaStorageSOPInstanceUID", ""))
        changed |= mark_lossy_derivation(
            ds, method=codec.method, ratio=ratio, source_sop_instance=old_uid, was_original=was_original
        )
        new_uid = derived_uid(old_uid or source_id, settings_fingerprint, uid_root)
        ds.SOPInstanceUID = new_uid
        ds.file_meta.MediaStorageSOPInstanceUID = UID(new_uid)
        changed.add(0x00080018)
    return changed


def write_encapsulated(
    ds: FileDataset,
    frames: list[bytes],
    codec: FrameCodec,
    *,
    photometric: str,
    ratio: float,
    settings_fingerprint: str,
    source: bytes,
    uid_root: str = DEFAULT_UID_ROOT,
) -> bytes:
    """Put ``frames`` into ``ds`` as encapsulated Pixel Data and return the Part 10 bytes."""
    source_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    changed = {0x7FE00010}
    extended = sum(len(f) + 8 for f in frames) > _MAX_BOT_BYTES
    if extended:
        pixel_data, eot, eot_lengths = encapsulate_extended(frames)
        ds.ExtendedOffsetTable = eot
        ds.ExtendedOffsetTableLengths = eot_lengths
    else:
        pixel_data = encapsulate(frames, has_bot=True)
    ds.PixelData = pixel_data
    elem = ds["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True
    # Without a UID to derive from, the source bytes stand in, so distinct files never collide.
    changed |= edit_for_output(
        ds,
        codec,
        photometric=photometric,
        ratio=ratio,
        settings_fingerprint=settings_fingerprint,
        source_id=f"sha256:{hashlib.sha256(source).hexdigest()}",
        uid_root=uid_root,
    )
    if not extended:
        spliced = splice_part10(ds, source, source_syntax, changed)
        if spliced is not None:
            return spliced
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
