"""Read what a JPEG 2000 codestream's main header says (ISO 15444-1 A.5/A.6): enough for tests
to check progression order, decomposition levels, the colour transform and TLM markers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SOC, _SIZ, _COD, _TLM, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF55, 0xFF90
#: COD's progression order byte.
PROGRESSIONS = {0: "LRCP", 1: "RLCP", 2: "RPCL", 3: "PCRL", 4: "CPRL"}


@dataclass(frozen=True)
class MainHeader:
    width: int
    height: int
    components: int
    progression: str
    levels: int
    colour_transform: bool
    tlm: bool
    ht: bool  #: a CAP marker (Part 15 codestream) is present


def main_header(codestream: bytes) -> MainHeader:
    """The main header's facts; ValueError for something that is no J2K codestream."""
    if struct.unpack(">H", codestream[:2])[0] != _SOC:
        raise ValueError("no SOC marker")
    pos, found, markers = 2, {}, set()
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack(">HH", codestream[pos : pos + 4])
        if marker == _SOT:
            break
        markers.add(marker)
        body = codestream[pos + 4 : pos + 2 + length]
        if marker == _SIZ:
            found["width"], found["height"] = struct.unpack(">II", body[2:10])
            found["components"] = struct.unpack(">H", body[34:36])[0]
        elif marker == _COD:
            found["progression"] = PROGRESSIONS[body[1]]
            found["colour_transform"] = bool(body[4])
            found["levels"] = body[5]
        pos += 2 + length
    return MainHeader(tlm=_TLM in markers, ht=0xFF50 in markers, **found)
