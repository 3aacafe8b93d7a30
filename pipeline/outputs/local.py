"""Outputs on the local filesystem: ``OUT.zip`` and ``OUT.result.json``, each written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.budget import MemoryBudget
from pipeline.config import CompressionSettings
from pipeline.engine import Progress, compress_study
from pipeline.files.errors import describe_error
from pipeline.outputs.record import build_record, failed_record
from pipeline.outputs.report import write_local_report
from pipeline.outputs.s3 import json_bytes
from pipeline.study.study import Study


class _ForwardOnly:
    """Hide seek/tell so the ZIP bytes are the same as for an S3 upload."""

    def __init__(self, fh: Any) -> None:
        self.write = fh.write


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(json_bytes(record))
    os.replace(tmp, path)


def write_local_outputs(
    study: Study,
    zip_path: Path,
    settings: CompressionSettings,
    *,
    encoders: int | None = None,
    budget: MemoryBudget | None = None,
    progress: Progress | None = None,
    report: bool = False,
) -> dict[str, Any]:
    """Compress ``study`` to ``zip_path``; the record goes next to it, written last."""
    record_path = zip_path.with_suffix(".result.json")
    tmp = zip_path.with_name(zip_path.name + ".part")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            run = compress_study(study, _ForwardOnly(fh), settings, encoders=encoders, budget=budget, progress=progress)
        os.replace(tmp, zip_path)
        record = build_record(run, output={"path": str(zip_path), "record": str(record_path)})
        if report and run.outcomes:
            write_local_report(record, study.source, zip_path)
        if not run.outcomes:
            record = failed_record(
                name=study.source.name,
                location=study.source.location,
                settings=settings.describe(),
                error="the study folder holds no files",
                code="EmptyStudy",
            )
            zip_path.unlink(missing_ok=True)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        record = failed_record(
            name=study.source.name,
            location=study.source.location,
            settings=settings.describe(),
            error=describe_error(exc),
            code="CompressionError",
        )
    write_json_atomic(record_path, record)
    return record
