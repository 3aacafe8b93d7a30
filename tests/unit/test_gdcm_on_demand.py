"""python-gdcm is loaded by the first frame that needs it (pipeline/gdcm_on_demand.py), and
decodes exactly as pydicom's own GDCM plugin does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT

# JPEG Lossless SV1, JPEG-LS Lossless, JPEG-LS near-lossless: inputs only GDCM decodes here.
GDCM_INPUTS = [
    "edge-cases/transfer-syntax/JPEG-LL.dcm",
    "edge-cases/transfer-syntax/dcm_qa_ts/7.dcm",
    "edge-cases/transfer-syntax/JPEGLSNearLossless_16.dcm",
]

_PROBE = """
import hashlib, json, sys
first = sys.argv[1]
if first == "pipeline":
    import handlers.worker  # the Lambda's import path: pipeline first
    import pydicom, pydicom.pixels  # what the engine and the encoders import before any frame
    from pipeline.codec import codec_for
    from pipeline.config import CompressionSettings
    from pipeline.files.process import load_libraries, process_file
    from pipeline.report.frames import frame_from_bytes

    load_libraries(codec_for(CompressionSettings()))  # the parent, before it forks the encoders
    loaded_before = "gdcm" in sys.modules
    actions = [process_file(p, open(p, "rb").read(), CompressionSettings(mode="lossless")).action for p in sys.argv[2:]]
    pixels = [frame_from_bytes(open(p, "rb").read(), 0).pixels for p in sys.argv[2:]]
else:
    import gdcm, pydicom  # pydicom with its own GDCM plugin, loaded eagerly

    loaded_before = "gdcm" in sys.modules
    actions = []
    pixels = [pydicom.dcmread(p).pixel_array for p in sys.argv[2:]]
digests = [hashlib.sha256(a.tobytes()).hexdigest() for a in pixels]
print(json.dumps({"before": loaded_before, "after": "gdcm" in sys.modules, "digests": digests, "actions": actions}))
"""


def _probe(first: str, paths: list[Path]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, first, *map(str, paths)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_handler_import_leaves_gdcm_unloaded_and_first_frame_loads_it(corpus: Path) -> None:
    paths = [corpus / p for p in GDCM_INPUTS]
    deferred = _probe("pipeline", paths)
    eager = _probe("pydicom", paths)
    assert deferred["before"] is False, "importing the handler loaded python-gdcm"
    assert deferred["after"] is True
    assert eager["before"] is True
    assert deferred["digests"] == eager["digests"]
    # JPEG Lossless and JPEG-LS lossless are re-encoded; near-lossless JPEG-LS is kept (lossy input).
    assert deferred["actions"] == ["compressed", "compressed", "kept"]
