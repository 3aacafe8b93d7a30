"""Upload a study the way a client should: every file first (in parallel), the marker last.

The marker is the trigger, so it must not exist before the files do; ``manifest.json`` also
lists each file's size and sha256 so the worker can tell a complete upload from a partial one.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.aws import client


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> (bucket, prefix ending with ``/``)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL: {url}")
    prefix = parsed.path.lstrip("/")
    return parsed.netloc, prefix if prefix.endswith("/") or not prefix else prefix + "/"


def _local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name not in ("_READY", "manifest.json"))


def submit_study(
    local_dir: str | os.PathLike[str],
    url: str,
    *,
    marker: str = "manifest",
    options: dict[str, Any] | None = None,
    threads: int = 8,
) -> dict[str, Any]:
    """Upload ``local_dir`` under ``url``, then the marker (``manifest``, ``ready`` or ``none``)."""
    root = Path(local_dir)
    bucket, prefix = parse_s3_url(url)
    s3 = client("s3")
    files = _local_files(root)

    def upload(path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=data)
        return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        listed = list(pool.map(upload, files))
    result: dict[str, Any] = {"bucket": bucket, "prefix": prefix, "files": len(listed), "listed": listed, "marker": None}
    if marker == "manifest":
        manifest = {**(options or {}), "files": listed}
        s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest, indent=2).encode())
        result.update(marker="manifest.json", manifest=manifest)
    elif marker == "ready":
        s3.put_object(Bucket=bucket, Key=prefix + "_READY", Body=b"")
        result["marker"] = "_READY"
    return result
