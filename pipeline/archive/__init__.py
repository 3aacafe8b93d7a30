"""Archive writers for study exports."""

from .zipstream import (
    SupportsWrite,
    UnsafeEntryName,
    ZipEntryInfo,
    ZipStreamWriter,
    ZipSummary,
    check_entry_name,
)

__all__ = [
    "SupportsWrite",
    "UnsafeEntryName",
    "ZipEntryInfo",
    "ZipStreamWriter",
    "ZipSummary",
    "check_entry_name",
]
