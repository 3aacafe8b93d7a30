"""PNG files from 8-bit arrays with zlib alone, so the report needs no imaging library.

The report's thumbnails are tiny (a few hundred pixels a side), so each image is filtered whole
with each of the PNG filters that vectorise (None, Sub, Up, Paeth: PNG spec 9.2) and the one that
deflates smallest is kept: CT thumbnails come out a third smaller than unfiltered.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB = 0, 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _filtered(raw: np.ndarray, bpp: int) -> list[bytes]:
    """The scanlines (rows of bytes, int16 for the arithmetic) under each filter, filter byte first."""
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    up_left = np.zeros_like(raw)
    up_left[1:, bpp:] = raw[:-1, :-bpp]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    out = []
    for kind, predicted in ((0, None), (1, left), (2, up), (4, paeth)):
        rows = raw if predicted is None else raw - predicted
        lines = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
        lines[:, 0] = kind
        lines[:, 1:] = rows & 0xFF
        out.append(lines.tobytes())
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit image: grey ``(rows, columns)`` or RGB ``(rows, columns, 3)``."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 pixels, not {pixels.dtype}")
    if pixels.ndim == 2:
        colour, bpp = _GREY, 1
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        colour, bpp = _RGB, 3
    else:
        raise ValueError(f"encode_png takes (rows, columns) or (rows, columns, 3), not {pixels.shape}")
    height, width = pixels.shape[:2]
    if not height or not width:
        raise ValueError("encode_png takes a non-empty image")
    raw = pixels.reshape(height, width * bpp).astype(np.int16)
    data = min((zlib.compress(lines, 9) for lines in _filtered(raw, bpp)), key=len)
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
