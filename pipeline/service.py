"""The study job behind a trigger: idempotent, locked, heart-beating, and explicit about failure.

Flow: manifest -> listing (complete?) -> fingerprint (done already?) -> lock -> compress to a
multipart upload -> result record (last) -> event. Transient trouble raises :class:`RetryLater`
so SQS redelivers; permanent trouble is recorded and announced once.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from pipeline.aws import client, error_code, is_transient
from pipeline.config import CompressionSettings, encoders_from_env, settings_from_env
from pipeline.engine import Study, compress_study
from pipeline.outputs.report import put_s3_report
from pipeline.files.errors import describe_error
from pipeline.notify.eventbridge import event_detail, publish
from pipeline.observability import logger
from pipeline.outputs.record import PROCESSING, SUCCEEDED, SUCCEEDED_WITH_WARNINGS, build_record, failed_record
from pipeline.outputs.s3 import MultipartSink, abort_stale_uploads, get_json, put_json
from pipeline.study.listing import Ignored, StudyObject, order_study, split_triggers
from pipeline.study.manifest import Manifest, ManifestError, parse_manifest
from pipeline.study.s3source import S3StudySource
from pipeline.study.source import SourceError
from pipeline.trigger.events import StudyTrigger

HEARTBEAT_SECONDS = 5.0
#: Seconds of work per input byte at one encoder (measured: 512x512 CT, J2K + verification).
SECONDS_PER_BYTE_PER_ENCODER = 0.12 / (512 * 1024)
SAFETY_MARGIN_MS = 30_000


class RetryLater(Exception):
    """Not now: leave the message on the queue (transient fault, study incomplete, busy)."""


class StudyFailed(Exception):
    """Permanent failure with a user-facing reason (already free of patient data).

    ``dead_letter``: after recording and announcing it, leave the message to go to the DLQ
    (the study failed on every attempt; an operator can redrive it once the cause is fixed).
    """

    def __init__(self, code: str, message: str, *, dead_letter: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.dead_letter = dead_letter


class DeadLetter(Exception):
    """Recorded and announced; raised so SQS moves the message to the dead-letter queue."""


@dataclass(frozen=True)
class ServiceConfig:
    data_bucket: str
    target_bucket: str
    source_prefix: str
    target_prefix: str
    event_bus_name: str
    settings: CompressionSettings
    max_receives: int = 3
    #: A lock whose holder has not refreshed it for this long belongs to a dead worker.
    lock_stale_seconds: int = 300
    encoders: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ServiceConfig":
        env = dict(os.environ) if env is None else env

        def prefix(name: str, default: str) -> str:
            value = env.get(name, default).lstrip("/")
            return value if value.endswith("/") else value + "/"

        data = env["DATA_BUCKET"]
        return cls(
            data_bucket=data,
            target_bucket=env.get("TARGET_BUCKET") or data,
            source_prefix=prefix("SOURCE_PREFIX", "incoming/"),
            target_prefix=prefix("TARGET_PREFIX", "compressed/"),
            event_bus_name=env.get("EVENT_BUS_NAME", "default"),
            settings=settings_from_env(env),
            max_receives=int(env.get("MAX_RECEIVES", "3")),
            lock_stale_seconds=int(env.get("LOCK_STALE_SECONDS", "300")),
            encoders=encoders_from_env(env),
        )


@dataclass
class StudyJob:
    """Everything known about one trigger's study before compression starts."""

    trigger: StudyTrigger
    cfg: ServiceConfig
    manifest: Manifest | None = None
    settings: CompressionSettings | None = None
    zip_key: str = ""
    record_key: str = ""
    study: Study | None = None
    fingerprint: str = ""
    ignored: list[Ignored] = field(default_factory=list)

    @property
    def study_path(self) -> str:
        return self.trigger.study_prefix[len(self.cfg.source_prefix):].rstrip("/")

    @property
    def lock_key(self) -> str:
        return self.zip_key + ".lock"

    def locations(self) -> tuple[dict[str, str], dict[str, str]]:
        study = {"bucket": self.trigger.bucket, "prefix": self.trigger.study_prefix, "marker": self.trigger.marker}
        output = {"bucket": self.cfg.target_bucket, "zipKey": self.zip_key, "recordKey": self.record_key}
        return study, output


def _now() -> str:
    # The same precision as the engine's finishedAt (microseconds): one format in the record.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def output_keys(cfg: ServiceConfig, study_path: str, manifest: Manifest | None) -> tuple[str, str]:
    """ZIP and record keys under the target prefix; ``outputFilename`` stays in the same folder."""
    if manifest and manifest.output_filename:
        folder = posixpath.dirname(study_path)
        zip_key = cfg.target_prefix + (folder + "/" if folder else "") + manifest.output_filename
    else:
        zip_key = cfg.target_prefix + study_path + ".zip"
    return zip_key, zip_key[: -len(".zip")] + ".result.json"


def _read_manifest(s3: Any, job: StudyJob) -> Manifest | None:
    key = job.trigger.study_prefix + "manifest.json"
    try:
        head = s3.head_object(Bucket=job.trigger.bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            if job.trigger.marker == "manifest.json":
                raise RetryLater("manifest.json announced but not readable yet") from exc
            return None
        raise
    from pipeline.study.manifest import MAX_MANIFEST_BYTES

    if head["ContentLength"] > MAX_MANIFEST_BYTES:
        raise StudyFailed("InvalidManifest", f"manifest.json is {head['ContentLength']:,} bytes; the limit is {MAX_MANIFEST_BYTES:,}")
    raw = s3.get_object(Bucket=job.trigger.bucket, Key=key)["Body"].read()
    try:
        return parse_manifest(raw)
    except ManifestError as exc:
        raise StudyFailed("InvalidManifest", str(exc)) from exc


def _select(job: StudyJob, objects: list[StudyObject]) -> tuple[list[StudyObject], list[Ignored], list[str]]:
    """The study's objects; with a manifest ``files`` list, exactly those (and what is missing)."""
    objects, ignored = split_triggers(objects)
    if not job.manifest or job.manifest.files is None:
        return objects, ignored, []
    by_path = {o.path: o for o in objects}
    wanted = {f.path: f for f in job.manifest.files}
    problems = []
    for f in job.manifest.files:
        obj = by_path.get(f.path)
        if obj is None:
            problems.append(f"{f.path} (missing)")
        elif obj.size != f.size:
            problems.append(f"{f.path} (size {obj.size}, manifest says {f.size})")
    extra = [Ignored(o.path, "not listed in manifest.json") for o in objects if o.path not in wanted]
    return [by_path[p] for p in wanted if p in by_path], ignored + extra, problems


def fingerprint(job: StudyJob, objects: list[StudyObject]) -> str:
    """Identity of the inputs and of what is asked of them."""
    doc = {
        "objects": [(o.path, o.size, o.version) for o in sorted(objects, key=lambda o: o.path)],
        "settings": job.settings.fingerprint() if job.settings else None,
        "zipKey": job.zip_key,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def prepare(job: StudyJob, *, last_attempt: bool) -> None:
    """Read the manifest, list and check the study; raises RetryLater/StudyFailed."""
    s3 = client("s3")
    job.manifest = _read_manifest(s3, job)
    try:
        job.settings = job.manifest.settings(job.cfg.settings) if job.manifest else job.cfg.settings
    except ManifestError as exc:
        raise StudyFailed("InvalidManifest", str(exc)) from exc
    job.zip_key, job.record_key = output_keys(job.cfg, job.study_path, job.manifest)
    checksums = {f.path: f.sha256 for f in (job.manifest.files or ()) if f.sha256} if job.manifest else {}
    source = S3StudySource(s3, job.trigger.bucket, job.trigger.study_prefix, checksums=checksums)
    objects, _ = source.list()
    selected, ignored, problems = _select(job, objects)
    if problems:
        message = f"study incomplete: {len(problems)} file(s) listed in manifest.json not present as listed: " + "; ".join(problems[:20])
        if last_attempt:
            raise StudyFailed("IncompleteStudy", message[:2000], dead_letter=True)
        raise RetryLater(message[:300])
    if not selected:
        raise StudyFailed("EmptyStudy", "the study folder holds no files besides its marker")
    job.study = Study(source, order_study(selected), ignored)
    job.fingerprint = fingerprint(job, selected)


def _lock_body(job: StudyJob) -> bytes:
    return json.dumps({"fingerprint": job.fingerprint, "since": time.time()}).encode()


def _acquire_lock(s3: Any, job: StudyJob) -> None:
    """Take the study's lock (a conditional PUT); a lock not refreshed for a while is taken over."""
    body = _lock_body(job)
    bucket = job.cfg.target_bucket
    for _ in range(2):
        try:
            s3.put_object(Bucket=bucket, Key=job.lock_key, Body=body, IfNoneMatch="*")
            return
        except Exception as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
        held = get_json(s3, bucket, job.lock_key) or {}
        if time.time() - float(held.get("since", 0)) < job.cfg.lock_stale_seconds:
            raise RetryLater("another worker is compressing this study")
        s3.delete_object(Bucket=bucket, Key=job.lock_key)  # its holder died: take over
    raise RetryLater("could not take the study lock")


def _release_lock(s3: Any, job: StudyJob) -> None:
    try:
        s3.delete_object(Bucket=job.cfg.target_bucket, Key=job.lock_key)
    except Exception:
        logger.warning("could not release study lock", extra={"lock": job.lock_key})


def _heartbeat(s3: Any, job: StudyJob, started: str, deadline: Callable[[], int] | None) -> Callable[[int, int], None]:
    last = [0.0]
    assert job.study is not None

    def beat(done: int, total: int) -> None:
        if deadline is not None and deadline() < SAFETY_MARGIN_MS:
            raise StudyFailed(
                "StudyTooLarge",
                f"study too large for the configured timeout: {total} files, "
                f"{sum(o.size for o in job.study.objects):,} bytes ({done} done when time ran out)",
            )
        now = time.monotonic()
        if now - last[0] >= HEARTBEAT_SECONDS or not last[0]:  # called per frame too: rate-limited
            last[0] = now
            put_json(s3, job.cfg.target_bucket, job.record_key, _processing_record(job, started, done, total))
            s3.put_object(Bucket=job.cfg.target_bucket, Key=job.lock_key, Body=_lock_body(job))  # still alive

    return beat


def _processing_record(job: StudyJob, started: str, done: int, total: int) -> dict[str, Any]:
    study, output = job.locations()
    return {
        "schemaVersion": 1,
        "status": PROCESSING,
        "study": study,
        "output": output,
        "progress": {"filesDone": done, "filesTotal": total, "heartbeat": _now()},
        "startedAt": started,
        "inputFingerprint": job.fingerprint,
        "settings": job.settings.describe() if job.settings else None,
    }


def _pixel_guard(job: StudyJob, deadline: Callable[[], int] | None, encoders: int) -> Callable[[StudyObject, int], None] | None:
    """Re-checks the time once a streamed object's header says how many pixel bytes it holds:
    a Deflated object's file size says nothing of that (1 MB can inflate to 1 GB), so the
    estimate made from file sizes before the run is revised, and a study that cannot finish
    fails now, cleanly, rather than at the deadline."""
    if deadline is None:
        return None

    def check(obj: StudyObject, pixel_bytes: int) -> None:
        if pixel_bytes <= obj.size:
            return
        _fail_if_too_slow(pixel_bytes, encoders, deadline,
                          f"{obj.path} holds {pixel_bytes:,} bytes of pixel data in {obj.size:,} file bytes")

    return check


def _check_time(job: StudyJob, deadline: Callable[[], int] | None, encoders: int) -> None:
    """The estimate before the run, from file sizes (for all but Deflated objects, their pixel
    bytes plus a header); :func:`_pixel_guard` revises it as streamed objects reveal theirs."""
    if deadline is None or job.study is None:
        return
    total = sum(o.size for o in job.study.objects)
    _fail_if_too_slow(total, encoders, deadline, f"{len(job.study.objects)} files, {total:,} bytes")


def _fail_if_too_slow(pixel_bytes: int, encoders: int, deadline: Callable[[], int], what: str) -> None:
    needed_ms = 1000 * pixel_bytes * SECONDS_PER_BYTE_PER_ENCODER / max(encoders, 1) + SAFETY_MARGIN_MS
    if needed_ms > deadline():
        raise StudyFailed(
            "StudyTooLarge",
            f"study too large for the configured timeout: {what} "
            f"(about {needed_ms / 1000:.0f} s needed, {deadline() / 1000:.0f} s left)",
        )


def _fail(job: StudyJob, code: str, message: str, *, write_record: bool = True) -> dict[str, Any]:
    s3 = client("s3")
    study, output = job.locations()
    record = failed_record(
        name=posixpath.basename(job.study_path),
        location=f"s3://{job.trigger.bucket}/{job.trigger.study_prefix}",
        settings=job.settings.describe() if job.settings else None,
        error=message,
        code=code,
        extra={"inputFingerprint": job.fingerprint or None, "metadata": job.manifest.metadata if job.manifest else None,
               "finishedAt": _now()},
    )
    if write_record and job.record_key:
        existing = get_json(s3, job.cfg.target_bucket, job.record_key)
        # A finished study's record describes its ZIP: a later failed trigger must not replace it.
        if not (existing and existing.get("status") in (SUCCEEDED, SUCCEEDED_WITH_WARNINGS)):
            put_json(s3, job.cfg.target_bucket, job.record_key, record)
    publish(client("events"), job.cfg.event_bus_name, event_detail(record, study=study, output=output))
    logger.warning("study failed", extra={"study": job.trigger.study_prefix, "code": code, "reason": message[:500]})
    return record


def _finished_already(s3: Any, job: StudyJob) -> dict[str, Any] | None:
    """What to do when a final record exists: nothing (same inputs), or OutputExists; None: compress."""
    existing = get_json(s3, job.cfg.target_bucket, job.record_key)
    if existing and existing.get("status") in (SUCCEEDED, SUCCEEDED_WITH_WARNINGS):
        if existing.get("inputFingerprint") == job.fingerprint:
            logger.info("duplicate trigger: outputs already match the inputs", extra={"study": job.trigger.study_prefix})
            return {**existing, "duplicate": True}
        if not (job.manifest and job.manifest.overwrite_existing):
            return _fail(job, "OutputExists", f"output exists: {job.zip_key} was made from other inputs "
                         "(set overwriteExisting: true in manifest.json to replace it)", write_record=False)
    return None


def run_trigger(
    trigger: StudyTrigger,
    cfg: ServiceConfig,
    *,
    receive_count: int = 1,
    remaining_ms: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Process one trigger. Returns the final record (or the existing one for a duplicate)."""
    job = StudyJob(trigger, cfg)
    last_attempt = receive_count >= cfg.max_receives
    if not job.study_path:
        raise StudyFailed("InvalidTrigger", "marker is not inside a study folder")
    if not job.zip_key:
        job.zip_key, job.record_key = output_keys(cfg, job.study_path, None)
    s3 = client("s3")
    try:
        prepare(job, last_attempt=last_attempt)
        done = _finished_already(s3, job)
        if done is not None:
            return done
        return _compress(job, remaining_ms)
    except StudyFailed as exc:
        record = _fail(job, exc.code, str(exc))
        if exc.dead_letter:
            raise DeadLetter(exc.code) from exc
        return record
    except SourceError as exc:
        return _fail(job, "SourceUnreadable", str(exc))
    except RetryLater:
        raise
    except Exception as exc:
        if last_attempt:
            code = "TransientErrorsExhausted" if is_transient(exc) else "InternalError"
            _fail(job, code, f"gave up after {receive_count} attempts: {describe_error(exc)}")
        raise


def _compress(job: StudyJob, remaining_ms: Callable[[], int] | None) -> dict[str, Any]:
    from pipeline.files.encoders import available_cpus

    s3 = client("s3")
    cfg = job.cfg
    encoders = cfg.encoders or available_cpus()
    _check_time(job, remaining_ms, encoders)
    _acquire_lock(s3, job)
    sink = MultipartSink(s3, cfg.target_bucket, job.zip_key)
    try:
        # Another worker may have finished the study between our first check and the lock.
        done = _finished_already(s3, job)
        if done is not None:
            return done
        aborted = abort_stale_uploads(s3, cfg.target_bucket, job.zip_key)
        if aborted:
            logger.info("aborted multipart uploads of an earlier attempt", extra={"count": aborted})
        started = _now()
        assert job.study is not None and job.settings is not None
        logger.info("compressing study", extra={"study": job.trigger.study_prefix, "files": len(job.study.objects)})
        beat = _heartbeat(s3, job, started, remaining_ms)
        beat(0, len(job.study.objects))  # the "processing" record exists from the start
        run = compress_study(job.study, sink, job.settings, encoders=encoders, progress=beat,
                             on_pixels=_pixel_guard(job, remaining_ms, encoders))
        sink.complete()
        study, output = job.locations()
        record = build_record(
            run,
            output={"bucket": cfg.target_bucket, "key": job.zip_key, "recordKey": job.record_key},
            extra={
                "study": {**study, "name": posixpath.basename(job.study_path)},
                "inputFingerprint": job.fingerprint,
                "metadata": job.manifest.metadata if job.manifest else None,
                "startedAt": started,
            },
        )
        if job.manifest and job.manifest.report:
            if put_s3_report(record, job.study.source, s3, cfg.target_bucket, job.zip_key, run.archive.size):
                output = {**output, "reportKey": record["output"]["reportKey"]}
        put_json(s3, cfg.target_bucket, job.record_key, record)  # last: its presence means done
        publish(client("events"), cfg.event_bus_name, event_detail(record, study=study, output=output))
        logger.info(
            "study compressed",
            extra={"study": job.trigger.study_prefix, "status": record["status"], "files": record["totals"]["files"],
                   "ratio": record["totals"]["ratio"], "seconds": record["timings"]["total"]},
        )
        return record
    except BaseException:
        sink.abort()
        raise
    finally:
        _release_lock(s3, job)
