"""A streamed object's output: its encoded frames collected in order, then written as one
Part 10 file into the ZIP, without ever holding the object (or its output) whole.

The bytes are those pydicom's ``dcmwrite`` would write for the same dataset with the same
frames (header, encapsulated Pixel Data with its offset table, the elements after it), so an
object gives the same output whether an encoder read it whole or the parent streamed it.
"""

from __future__ import annotations

import itertools
import struct
import time
import zlib
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pipeline.archive.spool import FrameSpool
from pipeline.archive.zipstream import ZipStreamWriter
from pipeline.codec.base import FrameCodec
from pipeline.config import CompressionSettings
from pipeline.files.frames import FrameResult, FrameStats
from pipeline.files.outcome import FileOutcome
from pipeline.files.stream import Begin, End
from pipeline.files.verify import VerificationFailed, floor_entry, summarise

_PIXEL_HEAD = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_ITEM = struct.Struct("<HHI")
_DELIMITER = _ITEM.pack(0xFFFE, 0xE0DD, 0)
_MAX_BOT = 0xFFFFFFFF


class Assembly:
    """Collects one streamed object's frame results; writes its output or says why it cannot."""

    def __init__(
        self,
        begin: Begin,
        codec: FrameCodec,
        settings: CompressionSettings,
        spool_memory: int,
        spool_dir: str | None = None,
    ) -> None:
        self.begin, self.codec, self.settings = begin, codec, settings
        self.spool = FrameSpool(spool_memory, spool_dir)
        self.stats = FrameStats()
        self.failure: str | None = None
        self.received = 0
        self.seconds = {"encode": 0.0, "verify": 0.0, "write": 0.0}

    @property
    def frames(self) -> int:
        return self.begin.decision.frames

    def add(self, result: FrameResult) -> None:
        self.received += 1
        if self.failure:
            return
        if result.failed:
            self.failure = result.reason(self.frames)
            self.spool.close()  # nothing of this object will be written
            return
        self.spool.append(result.codestream)
        if result.stats is not None:
            self.stats.add(result.stats)

    def close(self) -> None:
        self.spool.close()

    def finish(self, end: End, writer: ZipStreamWriter, entry_name: str) -> FileOutcome | None:
        """Write the output into ``writer`` and return its outcome; ``None`` when the object must
        be kept as-is (``self.failure`` then says why)."""
        self.failure = self.failure or end.error
        if self.failure is None and self.received != self.frames:
            self.failure = f"{self.received} of {self.frames} frames came back from the encoders"
        if self.failure:
            return None
        from pipeline.files.transcode import output_codec

        layout = self.begin.decision.layout
        pixel_in, pixel_out = layout.frame_bytes * self.frames, self.spool.total
        asked_codec, self.codec = self.codec, output_codec(self.codec, self.stats, self.frames)
        verification: dict[str, Any] = {"status": "skipped"}
        if self.settings.verify:
            try:
                verification = summarise(self.stats, bits_stored=layout.bits_stored, lossless=not self.codec.lossy)
            except VerificationFailed as exc:
                self.failure = f"verification failed, original kept: {exc}"
                return None
        ds = self.begin.header.ds
        sop_in = str(ds.get("SOPInstanceUID", "")) or None
        t = time.perf_counter()
        prefix, suffix = self._header_and_trailer(ds, end.trailer, pixel_in / max(pixel_out, 1))
        size, crc = 0, 0
        for piece in self._pieces(prefix, suffix):
            size, crc = size + len(piece), zlib.crc32(piece, crc)
        writer.add_sized(entry_name, self._pieces(prefix, suffix), size=size, crc32=crc)
        self.seconds["write"] = time.perf_counter() - t
        return FileOutcome(
            path=self.begin.obj.path,
            action="compressed",
            bytes_in=self.begin.obj.size,
            bytes_out=size,
            transfer_syntax_in=self.begin.header.transfer_syntax,
            transfer_syntax_out=self.codec.transfer_syntax,
            sop_instance_uid_in=sop_in,
            sop_instance_uid_out=str(ds.SOPInstanceUID) if "SOPInstanceUID" in ds else None,
            frames=self.frames,
            pixel_bytes_in=pixel_in,
            pixel_bytes_out=pixel_out,
            verification=verification,
            floor=floor_entry(self.stats, self.settings, frames=self.frames, ratio=pixel_in / max(pixel_out, 1))
            if asked_codec.lossy
            else None,
            seconds=self.seconds,
            streamed=True,
            spooled_bytes=self.spool.on_disk,
        )

    def _header_and_trailer(self, ds: Any, trailer: Any, ratio: float) -> tuple[bytes, bytes]:
        from pydicom import dcmread
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import dcmwrite, write_dataset

        from pipeline.files.dataset import edit_for_output

        lengths = [n + n % 2 for n in self.spool.lengths]  # items are padded to even length
        offsets = list(itertools.accumulate((n + 8 for n in lengths[:-1]), initial=0))  # from the first item's tag
        extended = sum(lengths) + 8 * len(lengths) > _MAX_BOT
        if extended:  # empty Basic Offset Table; 64-bit offsets in the Extended Offset Table (PS3.5 A.4)
            ds.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
            ds.ExtendedOffsetTableLengths = struct.pack(f"<{len(lengths)}Q", *lengths)
        header = self.begin.header
        edit_for_output(
            ds,
            self.codec,
            photometric=self.codec.output_photometric(self.begin.decision.layout.spec),
            ratio=ratio,
            settings_fingerprint=self.settings.fingerprint(),
            source_id=f"streamed:{self.begin.obj.path}:{self.begin.obj.size}:{header.pixel}",
            uid_root=self.settings.uid_root,
        )
        out = BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        prefix = out.getvalue()
        check = dcmread(BytesIO(prefix), stop_before_pixels=True)  # read back: the header describes the frames
        if (
            int(check.get("NumberOfFrames", 1) or 1) != self.frames
            or int(check.Rows) != self.begin.decision.layout.rows
        ):
            raise VerificationFailed("the written header does not describe the encoded frames")
        if extended:
            bot = _ITEM.pack(0xFFFE, 0xE000, 0)
        else:
            bot = _ITEM.pack(0xFFFE, 0xE000, 4 * len(offsets)) + struct.pack(f"<{len(offsets)}I", *offsets)
        suffix = b""
        if trailer is not None and len(trailer):
            buf = DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = True, False
            write_dataset(buf, trailer)
            suffix = buf.getvalue()
        return prefix + _PIXEL_HEAD + bot, _DELIMITER + suffix

    def _pieces(self, prefix: bytes, suffix: bytes) -> Iterator[bytes | memoryview]:
        yield prefix
        for frame in self.spool.frames():
            odd = len(frame) % 2
            yield _ITEM.pack(0xFFFE, 0xE000, len(frame) + odd)
            yield frame
            if odd:
                yield b"\x00"
        yield suffix
