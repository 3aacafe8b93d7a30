"""python-gdcm loaded by the first frame that needs it, not by ``import pydicom``.

pydicom imports every installed decoder plugin as it is imported, and python-gdcm's libraries
cost a process about 19 MB of RSS and 27 ms. The encoder processes are forks of the process
that imported pydicom, so the whole tree paid that three times over (the local stack's 1 GB row
went over its 300 MB bound by it), although only JPEG Lossless and JPEG-LS inputs need GDCM.
So pydicom's own GDCM plugin finds ``gdcm`` missing when pydicom imports it, and a plugin of
ours, registered in its place by :func:`register`, loads GDCM and that plugin the first time a
frame asks for them. Anyone else's ``import gdcm`` is left alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from functools import cache
from types import FrameType, ModuleType
from typing import Any

_PYDICOM_PLUGIN = "pydicom.pixels.decoders.gdcm"
# Every pydicom module that imports gdcm as pydicom is imported: its decoder and encoder plugins
# and the legacy handler (the pipeline encodes with OpenJPEG / OpenJPH, never with GDCM).
_PYDICOM_IMPORTERS = frozenset(
    {_PYDICOM_PLUGIN, "pydicom.pixels.encoders.gdcm", "pydicom.pixel_data_handlers.gdcm_handler"}
)
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
DECODER_DEPENDENCIES = dict.fromkeys(_UIDS, ("gdcm>=3.0.10",))

_released = False


class _HoldBack(importlib.abc.MetaPathFinder):
    """Fails ``import gdcm`` when pydicom's plugin modules ask for it, until a frame needs it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "gdcm" and not _released and _imported_by_pydicom():
            raise ModuleNotFoundError("gdcm is loaded on demand (pipeline.gdcm_on_demand)", name=fullname)
        return None


def _imported_by_pydicom() -> bool:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") in _PYDICOM_IMPORTERS:
            return True
        frame = frame.f_back
    return False


def install() -> None:
    """Hold GDCM back from pydicom's import; a no-op if pydicom (with GDCM) is loaded already."""
    if "pydicom" not in sys.modules and not any(isinstance(f, _HoldBack) for f in sys.meta_path):
        sys.meta_path.insert(0, _HoldBack())


@cache
def register() -> None:
    """Give every GDCM transfer syntax our plugin, unless pydicom's own loaded GDCM already."""
    if importlib.util.find_spec("gdcm") is None:
        return
    from pydicom.pixels import get_decoder

    for uid in _UIDS:
        decoder = get_decoder(uid)
        if "gdcm" not in decoder.available_plugins and LABEL not in decoder.available_plugins:
            decoder.add_plugin(LABEL, (__name__, "_decode_frame"))


def is_available(uid: str) -> bool:
    """pydicom's plugin interface: GDCM is installed (not loaded) and decodes ``uid``."""
    return uid in DECODER_DEPENDENCIES and importlib.util.find_spec("gdcm") is not None


@cache
def _pydicom_gdcm_plugin() -> ModuleType:
    global _released
    _released = True
    module = importlib.import_module(_PYDICOM_PLUGIN)
    if not module.HAVE_GDCM:  # imported while gdcm was held back: run it again, gdcm there
        module = importlib.reload(module)
    return module


def _decode_frame(src: bytes, runner: Any) -> bytes | bytearray:
    """pydicom's plugin interface: decode one frame with pydicom's own GDCM plugin."""
    decoded: bytes | bytearray = _pydicom_gdcm_plugin()._decode_frame(src, runner)
    return decoded
