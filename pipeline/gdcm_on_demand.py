"""python-gdcm loaded by the first frame that needs it, not by ``import pydicom``.

pydicom imports every installed decoder plugin as it is imported, and python-gdcm's libraries
cost a process about 19 MB of RSS and 27 ms. The handler never decodes pixels and its encoder
processes are forks of it, so the whole tree paid that three times over (the local stack's 1 GB
row went over its 300 MB bound by it), although only JPEG Lossless and JPEG-LS inputs need GDCM.
Here pydicom is imported with ``gdcm`` held back, and a plugin of ours, in the place of
pydicom's own, loads GDCM and pydicom's GDCM plugin the first time a frame asks for them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from functools import cache
from types import ModuleType
from typing import Any, Sequence

_PYDICOM_PLUGIN = "pydicom.pixels.decoders.gdcm"
LABEL = "gdcm-on-demand"

# What pydicom's GDCM plugin decodes (JPEG 2000 is pylibjpeg-openjpeg's first; GDCM stays the
# fallback there, as before).
_UIDS = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
DECODER_DEPENDENCIES = {uid: ("gdcm>=3.0.10",) for uid in _UIDS}


class _HoldBack(importlib.abc.MetaPathFinder):
    """Makes ``import gdcm`` fail while pydicom registers its plugins."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "gdcm":
            raise ModuleNotFoundError("gdcm is loaded on demand", name=fullname)
        return None


def import_pydicom() -> None:
    """Import pydicom with GDCM deferred; a no-op once pydicom is in (GDCM then is too)."""
    if "pydicom" in sys.modules or importlib.util.find_spec("gdcm") is None:
        return
    hold = _HoldBack()
    sys.meta_path.insert(0, hold)
    try:
        from pydicom.pixels import get_decoder
    finally:
        sys.meta_path.remove(hold)
    for uid in _UIDS:
        get_decoder(uid).add_plugin(LABEL, (__name__, "_decode_frame"))


def is_available(uid: str) -> bool:
    """pydicom's plugin interface: GDCM is installed (not loaded) and decodes ``uid``."""
    return uid in DECODER_DEPENDENCIES and importlib.util.find_spec("gdcm") is not None


@cache
def _pydicom_gdcm_plugin() -> ModuleType:
    module = importlib.import_module(_PYDICOM_PLUGIN)
    if not module.HAVE_GDCM:  # imported while gdcm was held back: run it again with gdcm there
        module = importlib.reload(module)
    return module


def _decode_frame(src: bytes, runner: Any) -> bytes | bytearray:
    """pydicom's plugin interface: decode one frame with pydicom's own GDCM plugin."""
    decoded: bytes | bytearray = _pydicom_gdcm_plugin()._decode_frame(src, runner)
    return decoded
