"""A PNG reader for the tests (8-bit grey, RGB or RGBA, not interlaced), written apart from the
report's encoder so that a round trip checks the encoder against the PNG spec, not against
itself; it also reads Chromium's screenshots."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _paeth_row(line: bytearray, prior: bytes, bpp: int) -> None:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


def read_png(data: bytes) -> np.ndarray:
    """The pixels of a PNG: (rows, columns) for grey, (rows, columns, channels) otherwise."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in _CHANNELS, header
    bpp = _CHANNELS[colour]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    assert len(raw) == height * (stride + 1), "IDAT holds the wrong number of bytes"
    out = np.empty((height, stride), dtype=np.uint8)
    prior = bytes(stride)
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        if kind == 1:  # Sub: a running sum per channel
            arr = np.frombuffer(bytes(line), dtype=np.uint8).reshape(width, bpp)
            line = bytearray((np.cumsum(arr, axis=0, dtype=np.uint64) & 0xFF).astype(np.uint8).tobytes())
        elif kind == 2:
            line = bytearray(
                ((np.frombuffer(bytes(line), np.uint8).astype(np.uint16) + np.frombuffer(prior, np.uint8)) & 0xFF)
                .astype(np.uint8)
                .tobytes()
            )
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + (((line[i - bpp] if i >= bpp else 0) + prior[i]) >> 1)) & 0xFF
        elif kind == 4:
            _paeth_row(line, prior, bpp)
        else:
            assert kind == 0, f"unknown filter {kind}"
        out[row] = np.frombuffer(bytes(line), dtype=np.uint8)
        prior = bytes(line)
    return out.reshape(height, width) if bpp == 1 else out.reshape(height, width, bpp)
