"""Presigned uploads, for a clinic without AWS credentials.

Run where the credentials are (an operator, a clinic portal's backend): it signs one PUT URL
per file of the study and one for ``manifest.json`` (each file's size and sha256, as
``submit`` writes it), and writes them to ``urls.tsv``, one ``<local path>\\t<url>`` line
each, the manifest last: it is the trigger, so a loop that stops at the first failed upload
never starts a partial study (README "Security" has the ``curl`` loop). The URLs are refused
when made, not when used, if they could not work or would reach past the clinic's folder:
an expiry outside S3's 1 s to 7 days, a destination outside ``<source prefix><clinic>/``, or
the clinic's folder itself (a study is a folder inside it, whose outputs then land under
``compressed/<clinic>/``, where the clinic policy lets the clinic read them).

Anyone holding ``urls.tsv`` can upload to those keys until the URLs expire, and the paths in
it may carry patient names: it is handled like the study. Nothing here logs a path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.submit import build_manifest, file_entry, manifest_bytes, parse_s3_url, study_files

#: SigV4 presigned URLs live at most 7 days.
MAX_EXPIRES = 7 * 24 * 3600
#: An IAM tag value (the clinic policy's ``clinic`` tag) without '/': letters, digits, spaces, _ . : = + - @
_CLINIC_ID = re.compile(r"^[\w .:=+@-]+$")
#: S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


class PresignError(ValueError):
    """The URLs would not work, or would reach outside the clinic's folder."""


@dataclass(frozen=True)
class PresignedStudy:
    bucket: str
    prefix: str
    files: int
    urls: Path
    manifest: Path
    expires_at: datetime
    temporary_credentials: bool

    def summary_lines(self) -> list[str]:
        """What the operator needs, without a file name (names may carry patient names)."""
        lines = [
            f"presigned {self.files} files + manifest.json for s3://{self.bucket}/{self.prefix}",
            f"  urls:     {self.urls} (manifest last; anyone holding it can upload to those keys until they expire)",
            f"  manifest: {self.manifest}",
            f"  valid until {self.expires_at:%Y-%m-%d %H:%M:%S} UTC",
            'upload with the curl loop in README "Security", from this folder',
        ]
        if self.temporary_credentials:
            lines.append("  note: signed with temporary credentials; the URLs stop working when those expire")
        return lines


def check_expires(expires: int) -> None:
    if not 1 <= expires <= MAX_EXPIRES:
        raise PresignError(f"--expires must be 1 to {MAX_EXPIRES} seconds (S3's 7-day maximum), got {expires}")


def check_destination(prefix: str, clinic: str, source_prefix: str) -> None:
    """``prefix`` must be a study folder inside ``<source_prefix><clinic>/``."""
    if not _CLINIC_ID.match(clinic) or clinic in (".", ".."):
        raise PresignError(
            "--clinic must be a non-empty tag value without '/' (letters, digits, spaces, _ . : = + - @)"
        )
    if not prefix.startswith(source_prefix):
        raise PresignError(f"the destination must be under the source prefix {source_prefix!r}")
    parts = prefix[len(source_prefix) :].rstrip("/").split("/")
    if parts[0] != clinic:
        raise PresignError(f"the destination is outside the folder of clinic {clinic!r} ({source_prefix}{clinic}/)")
    if len(parts) < 2:
        raise PresignError(
            f"the destination must be a study folder inside {source_prefix}{clinic}/, not the clinic's folder"
        )
    if any(p in ("", ".", "..") for p in parts):
        raise PresignError("the destination has an empty, '.' or '..' folder (URL clients rewrite those)")


def _check_paths(entries: list[dict[str, Any]], prefix: str) -> None:
    for entry in entries:
        if re.search(r"[\t\r\n]", entry["path"]):
            raise PresignError("a file name has a tab or line break, which urls.tsv cannot hold; rename it")
        if len((prefix + entry["path"]).encode()) > MAX_KEY_BYTES:
            raise PresignError(f"a file's key would be longer than S3's {MAX_KEY_BYTES} bytes")


def _s3_signer() -> tuple[Any, bool]:
    """An S3 client that signs with SigV4 (the only signature with a 7-day expiry), from the
    environment's credentials and endpoint (AWS_ENDPOINT_URL: the local stack), and whether
    those credentials are temporary (the URLs then die with them)."""
    import boto3
    from botocore.config import Config

    from pipeline.aws import CLIENT_CONFIG

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise PresignError("no AWS credentials to sign with: run it where the credentials are")
    client = session.client("s3", config=CLIENT_CONFIG.merge(Config(signature_version="s3v4")))
    return client, bool(credentials.token)


def presign_study(
    url: str,
    local_dir: str | os.PathLike[str],
    *,
    clinic: str,
    expires: int,
    out_dir: str | os.PathLike[str] = "presigned",
    options: dict[str, Any] | None = None,
) -> PresignedStudy:
    """Write ``out_dir/manifest.json`` and ``out_dir/urls.tsv`` for the study in ``local_dir``,
    to be uploaded under ``url`` (``s3://BUCKET/<source prefix><clinic>/<study>/``; the source
    prefix is the worker's, from ``SOURCE_PREFIX``)."""
    from pipeline.job.config import ServiceConfig

    check_expires(expires)
    bucket, prefix = parse_s3_url(url)
    check_destination(prefix, clinic, ServiceConfig.from_env({**os.environ, "DATA_BUCKET": bucket}).source_prefix)
    root, out = Path(local_dir), Path(out_dir)
    if not root.is_dir():
        raise PresignError(f"{root} is not a folder")
    if out.resolve().is_relative_to(root.resolve()):
        raise PresignError("--out must be outside the study folder (its files would become part of the study)")
    files = study_files(root)
    if not files:
        raise PresignError(f"{root} has no file to upload")
    entries = [file_entry(root, path) for path in files]
    _check_paths(entries, prefix)

    s3, temporary = _s3_signer()

    def sign(key: str) -> str:
        return str(s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires))

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest_path.write_bytes(manifest_bytes(build_manifest(entries, options)))
    rows = [(str(root / entry["path"]), sign(prefix + entry["path"])) for entry in entries]
    rows.append((str(manifest_path), sign(prefix + "manifest.json")))  # last: the trigger
    urls_path = out / "urls.tsv"
    # Bearer tokens for the clinic's folder: readable by the owner only, from the start.
    with open(os.open(urls_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        fh.write("".join(f"{path}\t{signed}\n" for path, signed in rows))
    urls_path.chmod(0o600)  # when it already existed
    return PresignedStudy(
        bucket=bucket,
        prefix=prefix,
        files=len(entries),
        urls=urls_path,
        manifest=manifest_path,
        expires_at=(datetime.now(UTC) + timedelta(seconds=expires)).replace(microsecond=0),
        temporary_credentials=temporary,
    )
