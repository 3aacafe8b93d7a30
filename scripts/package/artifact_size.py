"""Print a Lambda artifact's zipped and unzipped size (and fail above Lambda's limit).

Usage: python scripts/package/artifact_size.py build/package/arm64/dicom-compression.zip
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

# Lambda: 250 MB (MiB, 262,144,000 bytes) unzipped, function code plus all layers.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def sizes(path: Path) -> tuple[int, int, int]:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    return path.stat().st_size, sum(i.file_size for i in infos), len(infos)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1])
    zipped, unzipped, count = sizes(path)
    print(
        f"artifact {path}: {count} files, zipped {zipped / 1e6:.1f} MB ({zipped} bytes), "
        f"unzipped {unzipped / 1e6:.1f} MB ({unzipped} bytes; Lambda limit "
        f"{LAMBDA_UNZIPPED_LIMIT} bytes)"
    )
    if unzipped >= LAMBDA_UNZIPPED_LIMIT:
        print("ERROR: unzipped artifact exceeds Lambda's 250 MB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
