"""Large single objects built at test/bench time from real corpus CT frames (never committed).

A CBCT volume exported as one Multi-frame Grayscale Word Secondary Capture object: the header of
a real CT slice (its patient-free image attributes), and ``frames`` real 512x512 frames cycled
from the corpus slices. Written as a stream, so a 1 GB object costs a frame of memory to build.
Deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench.studies import corpus_slices

MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
DEFLATED = "1.2.840.10008.1.2.1.99"


def _header(corpus: Path, name: str, frames: int, transfer_syntax: str) -> tuple[Dataset, list[bytes]]:
    slices = corpus_slices(corpus)[:10]
    first = pydicom.dcmread(slices[0])
    pixels = [pydicom.dcmread(p).PixelData for p in slices]
    ds = Dataset()
    ds.SOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-object", name])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["bench-object", name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bench-object", name, "series"])
    ds.Modality = "OT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ConversionType = "WSD"
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "RescaleIntercept",
        "RescaleSlope",
        "WindowCenter",
        "WindowWidth",
    ):
        if keyword in first:
            setattr(ds, keyword, getattr(first, keyword))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 1.0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds, pixels


def build_multiframe(dest: Path, corpus: Path, *, frames: int, name: str | None = None) -> Path:
    """One Explicit VR LE multi-frame object of ``frames`` real CT frames (512 KiB each)."""
    if dest.exists():
        return dest
    ds, pixels = _header(corpus, name or dest.name, frames, ExplicitVRLittleEndian)
    frame_bytes = len(pixels[0])
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    with open(tmp, "wb") as fh:
        head = DicomBytesIO()
        dcmwrite(head, ds, enforce_file_format=True)
        fh.write(head.getvalue())
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frame_bytes * frames).to_bytes(4, "little"))
        for i in range(frames):
            fh.write(pixels[i % len(pixels)])
    tmp.rename(dest)
    return dest


def build_deflate_bomb(dest: Path, corpus: Path, *, frames: int, name: str | None = None) -> Path:
    """A Deflated Explicit VR LE object whose ``frames`` frames of zeros inflate to 512 KiB each
    (2,000 frames: a ~1 MB file holding 1 GB of pixel data)."""
    if dest.exists():
        return dest
    ds, pixels = _header(corpus, name or dest.name, frames, DEFLATED)
    frame_bytes = len(pixels[0])
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        from pydicom.filewriter import write_file_meta_info

        head.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(head, ds.file_meta, enforce_standard=True)
        fh.write(head.getvalue())
        fh.write(packer.compress(body.getvalue()))
        fh.write(packer.compress(b"\xe0\x7f\x10\x00OW\x00\x00" + (frame_bytes * frames).to_bytes(4, "little")))
        zeros = bytes(frame_bytes)
        for _ in range(frames):
            fh.write(packer.compress(zeros))
        fh.write(packer.flush())
    return dest
