"""Where does a study stand? waiting for its marker, queued, processing, succeeded or failed."""

from __future__ import annotations

from typing import Any

from pipeline.aws import client, error_code
from pipeline.job.config import ServiceConfig
from pipeline.job.plan import output_keys
from pipeline.outputs.s3 import get_json
from pipeline.study.manifest import ManifestError, parse_manifest


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def study_status(bucket: str, prefix: str, cfg: ServiceConfig | None = None) -> dict[str, Any]:
    """A small dict: ``state`` plus what a person needs to act on it."""
    import os

    cfg = cfg or ServiceConfig.from_env({**os.environ, "DATA_BUCKET": bucket})
    s3 = client("s3")
    if not prefix.startswith(cfg.source_prefix):
        return {"state": "unknown", "detail": f"studies live under s3://{bucket}/{cfg.source_prefix}"}
    study_path = prefix[len(cfg.source_prefix) :].rstrip("/")
    has_manifest = _exists(s3, bucket, prefix + "manifest.json")
    manifest = None
    if has_manifest:
        try:
            manifest = parse_manifest(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
        except ManifestError:
            manifest = None
    zip_key, record_key = output_keys(cfg, study_path, manifest)
    record = get_json(s3, cfg.target_bucket, record_key)
    if record is None:
        if has_manifest or _exists(s3, bucket, prefix + "_READY"):
            return {"state": "queued", "detail": "marker present; no worker has picked the study up yet"}
        return {"state": "waiting", "detail": "no _READY or manifest.json in the study folder yet"}
    status = record.get("status")
    if status == "processing":
        return {
            "state": "processing",
            "progress": record.get("progress"),
            "record": f"s3://{cfg.target_bucket}/{record_key}",
        }
    if status == "failed":
        return {"state": "failed", "error": record.get("error"), "record": f"s3://{cfg.target_bucket}/{record_key}"}
    return {
        "state": status,
        "zip": f"s3://{cfg.target_bucket}/{zip_key}",
        "record": f"s3://{cfg.target_bucket}/{record_key}",
        "totals": record.get("totals"),
    }
