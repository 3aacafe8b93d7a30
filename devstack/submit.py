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


#: Trigger objects: never part of a study, so a local copy of one is never uploaded as a file.
MARKERS = ("_READY", "manifest.json")


class SubmitError(ValueError):
    """The local study cannot be submitted (said to the user, nothing uploaded)."""


def study_files(root: Path) -> list[Path]:
    """The study folder's regular files (symlinks and markers left out), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name not in MARKERS)


def file_entry(root: Path, path: Path, data: bytes | None = None) -> dict[str, Any]:
    """The manifest's line for one file: its path below ``root``, size and sha256, which the
    worker checks so a partial upload is never compressed. ``data``: the bytes already read
    (``submit`` uploads them); otherwise the file is hashed as a stream."""
    rel = path.relative_to(root).as_posix()
    if data is not None:
        return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        size = fh.tell()
    return {"path": rel, "size": size, "sha256": digest}


def build_manifest(files: list[dict[str, Any]], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``manifest.json``: the settings in ``options`` and exactly these files."""
    return {**(options or {}), "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2).encode()


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
    files = study_files(root) if root.is_dir() else []
    if not files:  # an empty manifest would only fail the study later, less clearly
        raise SubmitError(f"{root} is not a folder with files in it: nothing to submit")
    s3 = client("s3")

    def upload(path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        entry = file_entry(root, path, data)
        s3.put_object(Bucket=bucket, Key=prefix + entry["path"], Body=data)
        return entry

    with ThreadPoolExecutor(max_workers=threads) as pool:
        listed = list(pool.map(upload, files))
    result: dict[str, Any] = {
        "bucket": bucket,
        "prefix": prefix,
        "files": len(listed),
        "listed": listed,
        "marker": None,
    }
    if marker == "manifest":
        manifest = build_manifest(listed, options)
        s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=manifest_bytes(manifest))
        result.update(marker="manifest.json", manifest=manifest)
    elif marker == "ready":
        s3.put_object(Bucket=bucket, Key=prefix + "_READY", Body=b"")
        result["marker"] = "_READY"
    return result
