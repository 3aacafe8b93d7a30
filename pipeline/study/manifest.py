"""``manifest.json``: the optional, strict description of a study and how to compress it.

A manifest that is not valid JSON, too large, too deep or off-schema fails the study with a
message that says which field is wrong; nothing is guessed.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import MAX_MIN_PSNR, MAX_RATE, CompressionSettings, SettingsError

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_METADATA_BYTES = 16 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {
    "compressionRate",
    "mode",
    "codec",
    "outputFilename",
    "overwriteExisting",
    "files",
    "metadata",
    "verify",
    "minPsnrDb",
    "report",
}


class ManifestError(ValueError):
    """The manifest cannot be used; the message is shown to the user as the failure reason."""


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    compression_rate: float | None = None
    mode: Literal["lossy", "lossless"] | None = None
    codec: Literal["j2k", "htj2k"] | None = None
    verify: bool | None = None
    min_psnr: float | None = None
    report: bool = False
    output_filename: str | None = None
    overwrite_existing: bool = False
    files: tuple[ManifestFile, ...] | None = None
    metadata: Any = field(default=None)

    def settings(self, base: CompressionSettings) -> CompressionSettings:
        try:
            return base.with_overrides(
                rate=self.compression_rate,
                mode=self.mode,
                codec=self.codec,
                verify=self.verify,
                min_psnr=self.min_psnr,
            )
        except SettingsError as exc:
            raise ManifestError(str(exc)) from exc


def _check_depth_raw(raw: bytes) -> None:
    """Refuse deep nesting before json.loads can recurse into it."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                raise ManifestError(f"manifest.json is nested deeper than {MAX_DEPTH} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _safe_relative(path: str) -> bool:
    return (
        bool(path)
        and not path.startswith("/")
        and "\\" not in path
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def parse_manifest(raw: bytes) -> Manifest:
    """Validate and parse manifest bytes (size and depth are checked before parsing)."""
    doc = _load(raw)
    rate = _rate(doc.get("compressionRate"))
    mode, codec, verify = _choices(doc)
    floor = _floor(doc.get("minPsnrDb"))
    report, overwrite = _flag(doc, "report"), _flag(doc, "overwriteExisting")
    out_name = _output_filename(doc.get("outputFilename"))
    files = _files(doc["files"]) if "files" in doc else None
    metadata = doc.get("metadata")
    if metadata is not None and len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ManifestError(f"metadata is larger than {MAX_METADATA_BYTES:,} bytes once serialised")
    return Manifest(
        compression_rate=float(rate) if rate is not None else None,
        mode=mode,
        codec=codec,
        verify=verify,
        min_psnr=float(floor) if floor is not None else None,
        report=report,
        output_filename=out_name,
        overwrite_existing=overwrite,
        files=files,
        metadata=metadata,
    )


def _load(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest.json is {len(raw):,} bytes; the limit is {MAX_MANIFEST_BYTES:,}")
    _check_depth_raw(raw)
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        # Lone surrogates (\\udXXX escapes) parse but cannot be stored or sent on: refuse them here.
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("manifest.json is not valid JSON: it is not UTF-8 text") from exc
    except UnicodeEncodeError as exc:
        raise ManifestError("manifest.json is not valid JSON: it contains lone surrogate escapes") from exc
    except ValueError as exc:
        raise ManifestError(f"manifest.json is not valid JSON: {exc}"[:200]) from exc
    if not isinstance(doc, dict):
        raise ManifestError("manifest.json must be a JSON object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise ManifestError(f"manifest.json has unknown fields: {', '.join(unknown)[:200]}")
    return doc


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _rate(rate: Any) -> Any:
    if rate is not None and (not _is_number(rate) or rate < 0):
        raise ManifestError("compressionRate must be a number >= 0 (0 means lossless)")
    if rate is not None and rate != 0 and not 1 < rate <= MAX_RATE:
        raise ManifestError(f"compressionRate must be 0 (lossless) or above 1 and at most {MAX_RATE:g}")
    return rate


def _floor(floor: Any) -> Any:
    if floor is not None and (not _is_number(floor) or not 0 <= floor <= MAX_MIN_PSNR):
        raise ManifestError(f"minPsnrDb must be a number between 0 (off) and {MAX_MIN_PSNR:g}")
    return floor


def _choices(doc: dict[str, Any]) -> tuple[Any, Any, Any]:
    mode = doc.get("mode")
    if mode is not None and mode not in ("lossy", "lossless"):
        raise ManifestError("mode must be 'lossy' or 'lossless'")
    codec = doc.get("codec")
    if codec is not None and codec not in ("j2k", "htj2k"):
        raise ManifestError("codec must be 'j2k' or 'htj2k'")
    verify = doc.get("verify")
    if verify is not None and not isinstance(verify, bool):
        raise ManifestError("verify must be true or false")
    return mode, codec, verify


def _flag(doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise ManifestError(f"{name} must be true or false")
    return value


def _output_filename(out_name: Any) -> str | None:
    if out_name is None:
        return None
    if not isinstance(out_name, str) or not out_name.strip():
        raise ManifestError("outputFilename must be a non-empty string")
    if "/" in out_name or "\\" in out_name or out_name in (".", "..") or any(ord(c) < 0x20 for c in out_name):
        raise ManifestError("outputFilename must be a plain file name (it may not leave the target prefix)")
    if len(out_name.encode()) > 255:
        raise ManifestError("outputFilename is longer than 255 bytes")
    return out_name if out_name.lower().endswith(".zip") else out_name + ".zip"


def _files(items: Any) -> tuple[ManifestFile, ...]:
    if not isinstance(items, list) or not items:
        raise ManifestError("files must be a non-empty list of {path, size, sha256?}")
    parsed, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"path", "size", "sha256"}:
            raise ManifestError(f"files[{i}] must be an object with path, size and optional sha256")
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        if (
            not isinstance(path, str)
            or not _safe_relative(path)
            or (posixpath.basename(path) == "manifest.json" and "/" not in path)
        ):
            raise ManifestError(f"files[{i}].path must be a relative path inside the study folder")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"files[{i}].size must be an integer >= 0")
        if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest.lower())):
            raise ManifestError(f"files[{i}].sha256 must be 64 hexadecimal characters")
        if path in seen:
            raise ManifestError(f"files[{i}].path is listed twice")
        seen.add(path)
        parsed.append(ManifestFile(path, size, digest.lower() if digest else None))
    return tuple(parsed)
