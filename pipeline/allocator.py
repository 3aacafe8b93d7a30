"""Keep glibc's allocator from turning freed file buffers into resident memory.

Every file passes through buffers of about its size (S3 body, pipe message, pixel arrays).
glibc serves blocks above M_MMAP_THRESHOLD with mmap and returns them on free, but by default
it raises that threshold to the size of each freed block, after which half-megabyte buffers
come from the heap arenas (one per thread) and their freed pages stay resident, growing with
the number of files seen. A fixed threshold, fewer arenas and a low trim threshold keep
the resident size flat at any study size. No-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_applied = False


def bound_allocator(mmap_threshold: int = 256 * 1024, arenas: int = 2) -> bool:
    """Apply once per process (forked workers inherit it); ``False`` when not on glibc.

    ``DICOM_MALLOC_DEFAULTS=1`` leaves glibc's defaults (for measuring the difference)."""
    global _applied
    if _applied:
        return True
    if os.environ.get("DICOM_MALLOC_DEFAULTS") == "1":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold),
            (_M_TRIM_THRESHOLD, 2 * mmap_threshold),
            (_M_ARENA_MAX, arenas),
        )
    )
    _applied = ok
    return ok
