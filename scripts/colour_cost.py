"""What encoding RGB without the JPEG 2000 colour transform costs, on the corpus's colour images.

Run: .venv/bin/python scripts/colour_cost.py [corpus dir]   (prints a markdown table)
For each RGB image the pipeline compresses: lossless size with and without the transform (J2K and
HTJ2K), lossy at the default rate 100 with the floor off (size, range-PSNR), and the pipeline's
default lossy output (rate 100, 40 dB floor): its size and range-PSNR.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pydicom

from pipeline.codec.htj2k import HTJ2KCodec
from pipeline.codec.j2k import J2KCodec
from pipeline.config import CompressionSettings
from pipeline.files.frames import FrameLayout
from pipeline.files.process import process_file


def range_psnr(src: np.ndarray, out: np.ndarray) -> float:
    rmse = math.sqrt(float(np.mean((src.astype(np.float64) - out) ** 2)))
    span = float(src.max()) - float(src.min())
    return math.inf if rmse == 0 else 20 * math.log10(max(span, 1.0) / rmse)


def main(corpus: Path) -> None:
    rows = [
        r
        for r in csv.DictReader(open(corpus / "MANIFEST.csv"))
        if r["photometric"] in ("RGB", "YBR_RCT")
        and r["has_pixel_data"] == "yes"
        and min(int(r["rows"]), int(r["cols"])) >= 32
        and r["bits_allocated"] in ("8", "16")
    ]
    print(
        "| image | J2K lossless RGB / RCT bytes | HTJ2K lossless RGB / RCT bytes | J2K lossy@100 RGB / ICT bytes (range-PSNR dB) | pipeline lossy (floor 40 dB) RGB / ICT bytes (range-PSNR dB) |"
    )
    print("|---|---|---|---|---|")
    totals = np.zeros(8)
    for r in rows:
        data = (corpus / r["file"]).read_bytes()
        floored = [process_file(r["file"], data, CompressionSettings(colour_transform=t)) for t in (False, True)]
        if floored[0].action != "compressed":  # lossy sources are kept as they are
            continue
        ds = pydicom.dcmread(corpus / r["file"])
        spec = FrameLayout.of(ds, str(ds.file_meta.TransferSyntaxUID)).spec
        px = ds.pixel_array
        frame = px if int(ds.get("NumberOfFrames", 1) or 1) == 1 else px[0]
        cells, sizes = [], []
        for make in (J2KCodec, HTJ2KCodec):
            plain, mct = (len(make(None, colour_transform=t).encode(frame, spec)) for t in (False, True))
            sizes += [plain, mct]
            cells.append(f"{plain} / {mct} ({100 * (plain / mct - 1):+.1f}%)")
        lossy = []
        for t in (False, True):
            codec = J2KCodec(100.0, colour_transform=t)
            stream = codec.encode(frame, spec)
            sizes.append(len(stream))
            lossy.append((len(stream), range_psnr(frame, codec.decode(stream))))
        cells.append(f"{lossy[0][0]} ({lossy[0][1]:.1f}) / {lossy[1][0]} ({lossy[1][1]:.1f})")
        sizes += [o.bytes_out for o in floored]
        cells.append(" / ".join(f"{o.bytes_out} ({o.verification.get('rangePsnrDb')})" for o in floored))
        totals += sizes
        print(
            f"| {Path(r['file']).name} ({r['rows']}x{r['cols']}, {r['bits_stored']} bit) | " + " | ".join(cells) + " |"
        )
    t = totals
    print(
        f"| **total** | {t[0]:.0f} / {t[1]:.0f} ({100 * (t[0] / t[1] - 1):+.1f}%) | {t[2]:.0f} / {t[3]:.0f} "
        f"({100 * (t[2] / t[3] - 1):+.1f}%) | {t[4]:.0f} / {t[5]:.0f} | {t[6]:.0f} / {t[7]:.0f} "
        f"({100 * (t[6] / t[7] - 1):+.1f}%) |"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/dicom-corpus"))
