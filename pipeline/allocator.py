"""Keep glibc's allocator from turning freed file buffers into resident memory.

Every file passes through buffers of about its size (S3 body, pipe message, pixel arrays).
glibc serves blocks above M_MMAP_THRESHOLD with mmap and returns them on free, but by default
it raises that threshold to the size of each freed block, after which half-megabyte buffers
come from the heap arenas (one per thread) and their freed pages stay resident, growing with
the number of files seen. A fixed threshold, fewer arenas and a low trim threshold keep
the resident size flat at any study size. No-op where glibc is absent.

That policy suits the many-threaded parent, not the encoders: each encode and verification
allocates a few half-megabyte to megabyte buffers (pixels, codec tiles, differences), and with a
256 KiB threshold every one of them is mapped, faulted in page by page and unmapped again: the
encoders spent 15-50 % more CPU (J2K 12.2 -> 14.7 s, HTJ2K 2.4 -> 3.6 s on 400 CT slices). A
forked encoder has one thread and the same few buffer sizes file after file, so it keeps them in
its heap (:func:`encoder_allocator`), which stays as large as one file's working set.
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
    """Apply once per process (forked encoders inherit it); ``False`` when not on glibc.

    ``DICOM_MALLOC_DEFAULTS=1`` leaves glibc's defaults (for measuring the difference)."""
    global _applied
    if _applied:
        return True
    _applied = _mallopt(
        (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, 2 * mmap_threshold), (_M_ARENA_MAX, arenas)
    )
    return _applied


def encoder_allocator() -> bool:
    """For a forked, single-threaded encoder: buffers up to 32 MiB (glibc's largest threshold) come
    from the heap and are reused; free heap above 16 MiB is still returned, so one large file
    does not pin its memory for the rest of the study. ``False`` when not applied (as above)."""
    return _mallopt((_M_MMAP_THRESHOLD, 32 * 1024 * 1024), (_M_TRIM_THRESHOLD, 16 * 1024 * 1024))


def _mallopt(*settings: tuple[int, int]) -> bool:
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
    return all(mallopt(param, value) == 1 for param, value in settings)
