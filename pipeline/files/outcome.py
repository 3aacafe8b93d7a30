"""What happened to one file: the row of the result record, plus the bytes for the ZIP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["compressed", "kept"]


@dataclass
class FileOutcome:
    """One source object's fate. ``data`` is what goes into the ZIP (never serialised)."""

    path: str
    action: Action
    bytes_in: int
    reason: str | None = None
    #: ``True`` when the file was expected to compress but could not (study gets a warning).
    warning: bool = False
    data: bytes | None = field(default=None, repr=False)
    transfer_syntax_in: str | None = None
    transfer_syntax_out: str | None = None
    sop_instance_uid_in: str | None = None
    sop_instance_uid_out: str | None = None
    frames: int | None = None
    pixel_bytes_in: int | None = None
    pixel_bytes_out: int | None = None
    verification: dict[str, Any] | None = None
    #: What the quality floor did (lossy outputs with a floor in force).
    floor: dict[str, Any] | None = None
    #: For DICOMDIR objects: the files it indexes, as (study-relative path, SOP Instance UID, transfer syntax).
    directory_refs: list[tuple[str, str | None, str | None]] | None = field(default=None, repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_out: int | None = None
    entry_name: str | None = None
    #: Read as header + frames by the parent (not whole by one encoder); not in the record, which
    #: must not depend on the memory budget that decided it.
    streamed: bool = field(default=False, repr=False)
    #: Bytes of compressed frames that waited in a temporary file (a streamed object's spool).
    spooled_bytes: int = field(default=0, repr=False)

    @property
    def pixel_ratio(self) -> float | None:
        if self.pixel_bytes_in and self.pixel_bytes_out:
            return self.pixel_bytes_in / self.pixel_bytes_out
        return None

    def to_record(self) -> dict[str, Any]:
        """The per-file entry of the result record (only fields that say something)."""
        rec: dict[str, Any] = {"path": self.path, "action": self.action}
        if self.entry_name and self.entry_name != self.path:
            rec["zipEntry"] = self.entry_name
        if self.reason:
            rec["reason"] = self.reason
        if self.warning:
            rec["warning"] = True
        rec["bytesIn"] = self.bytes_in
        rec["bytesOut"] = self.bytes_out if self.bytes_out is not None else self.bytes_in
        for key, value in (
            ("transferSyntaxIn", self.transfer_syntax_in),
            ("transferSyntaxOut", self.transfer_syntax_out),
            ("frames", self.frames),
            ("pixelBytesIn", self.pixel_bytes_in),
            ("pixelBytesOut", self.pixel_bytes_out),
        ):
            if value is not None:
                rec[key] = value
        if self.pixel_ratio:
            rec["ratio"] = round(self.pixel_ratio, 3)
        if self.sop_instance_uid_out and self.sop_instance_uid_out != self.sop_instance_uid_in:
            rec["sopInstanceUidIn"] = self.sop_instance_uid_in
            rec["sopInstanceUidOut"] = self.sop_instance_uid_out
        if self.verification is not None:
            rec["verification"] = self.verification
        if self.floor is not None:
            rec["floor"] = self.floor
        return rec
