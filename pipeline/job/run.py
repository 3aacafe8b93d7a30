"""One trigger, start to end: plan, skip what is done, lock, compress, record, announce.

Transient trouble raises :class:`RetryLater` so SQS redelivers; permanent trouble is recorded
and announced once (:func:`fail`); the last attempt's unexpected error too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.aws import client, is_transient
from pipeline.files.errors import describe_error
from pipeline.host import available_cpus
from pipeline.job import deadline
from pipeline.job.config import ServiceConfig
from pipeline.job.errors import DeadLetter, RetryLater, StudyFailed
from pipeline.job.heartbeat import Heartbeat, now
from pipeline.job.lock import StudyLock
from pipeline.job.plan import StudyPlan, Target, default_target, plan_study, target
from pipeline.job.store import RecordStore, read_manifest
from pipeline.notify.eventbridge import event_detail, publish
from pipeline.observability import logger
from pipeline.outputs.record import build_record, failed_record
from pipeline.outputs.report import put_s3_report
from pipeline.outputs.s3 import MultipartSink, abort_stale_uploads
from pipeline.study.source import SourceError
from pipeline.trigger.events import StudyTrigger

if TYPE_CHECKING:  # imported for real by the first study (see _compress)
    from pipeline.engine import StudyRun


def run_trigger(
    trigger: StudyTrigger,
    cfg: ServiceConfig,
    *,
    receive_count: int = 1,
    remaining_ms: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Process one trigger. Returns the final record (or the existing one for a duplicate)."""
    last_attempt = receive_count >= cfg.max_receives
    known = default_target(trigger, cfg)  # what a failure is recorded with, as it grows
    fingerprint: str | None = None
    s3 = client("s3")
    try:
        manifest = read_manifest(s3, trigger)
        known = replace(known, manifest=manifest)
        known = target(trigger, cfg, manifest)
        plan = plan_study(s3, known, last_attempt=last_attempt)
        fingerprint = plan.fingerprint
        done = _finished_already(RecordStore(s3, cfg.target_bucket), plan)
        if done is not None:
            return done
        return _compress(plan, remaining_ms)
    except StudyFailed as exc:
        record = fail(known, exc.code, str(exc), fingerprint=fingerprint)
        if exc.dead_letter:
            raise DeadLetter(exc.code) from exc
        return record
    except SourceError as exc:
        return fail(known, "SourceUnreadable", str(exc), fingerprint=fingerprint)
    except RetryLater:
        raise
    except Exception as exc:
        if last_attempt:
            code = "TransientErrorsExhausted" if is_transient(exc) else "InternalError"
            fail(known, code, f"gave up after {receive_count} attempts: {describe_error(exc)}", fingerprint=fingerprint)
        raise


def _compress(plan: StudyPlan, remaining_ms: Callable[[], int] | None) -> dict[str, Any]:
    # The engine (numpy, the codecs, the encoder pool) is imported by the first study, not by the
    # handler's import: a cold start for a test event or a duplicate needs none of it.
    from pipeline.engine import compress_study

    s3 = client("s3")
    goal, cfg = plan.target, plan.target.cfg
    encoders = cfg.encoders or available_cpus()
    deadline.check_before_run(plan.study.objects, remaining_ms, encoders)
    lock = StudyLock(
        s3, cfg.target_bucket, goal.lock_key, fingerprint=plan.fingerprint, stale_seconds=cfg.lock_stale_seconds
    )
    lock.acquire()
    store = RecordStore(s3, cfg.target_bucket)
    sink = MultipartSink(s3, cfg.target_bucket, goal.zip_key)
    try:
        # Another worker may have finished the study between our first check and the lock.
        done = _finished_already(store, plan)
        if done is not None:
            return done
        aborted = abort_stale_uploads(s3, cfg.target_bucket, goal.zip_key)
        if aborted:
            logger.info("aborted multipart uploads of an earlier attempt", extra={"count": aborted})
        started = now()
        logger.info("compressing study", extra={"study": goal.trigger.study_prefix, "files": len(plan.study.objects)})
        heartbeat = Heartbeat(plan, store, lock, started)
        out_of_time = deadline.running_out(plan.study.objects, remaining_ms)

        def progress(done: int, total: int) -> None:
            out_of_time(done, total)  # raises: the engine stops, the upload is aborted below
            heartbeat(done, total)

        progress(0, len(plan.study.objects))  # the "processing" record exists from the start
        run = compress_study(
            plan.study,
            sink,
            plan.settings,
            encoders=encoders,
            progress=progress,
            on_pixels=deadline.pixel_guard(remaining_ms, encoders),
        )
        sink.complete()
        return _succeeded(plan, run, started, store, s3)
    except BaseException:
        sink.abort()
        raise
    finally:
        lock.release()


def _succeeded(plan: StudyPlan, run: StudyRun, started: str, store: RecordStore, s3: Any) -> dict[str, Any]:
    goal, cfg = plan.target, plan.target.cfg
    study, output = goal.locations()
    record = build_record(
        run,
        output={"bucket": cfg.target_bucket, "key": goal.zip_key, "recordKey": goal.record_key},
        extra={
            "study": {**study, "name": posixpath.basename(goal.study_path)},
            "inputFingerprint": plan.fingerprint,
            "metadata": goal.metadata,
            "startedAt": started,
        },
    )
    if goal.manifest and goal.manifest.report:
        if put_s3_report(record, plan.study.source, s3, cfg.target_bucket, goal.zip_key, run.archive.size):
            output = {**output, "reportKey": record["output"]["reportKey"]}
    store.put(goal.record_key, record)  # last: its presence means done
    publish(client("events"), cfg.event_bus_name, event_detail(record, study=study, output=output))
    logger.info(
        "study compressed",
        extra={
            "study": goal.trigger.study_prefix,
            "status": record["status"],
            "files": record["totals"]["files"],
            "ratio": record["totals"]["ratio"],
            "seconds": record["timings"]["total"],
        },
    )
    return record


def _finished_already(store: RecordStore, plan: StudyPlan) -> dict[str, Any] | None:
    """What to do when a final record exists: nothing (same inputs), or OutputExists; None: compress."""
    goal = plan.target
    existing = store.finished(goal.record_key)
    if existing is None:
        return None
    if existing.get("inputFingerprint") == plan.fingerprint:
        logger.info("duplicate trigger: outputs already match the inputs", extra={"study": goal.trigger.study_prefix})
        return {**existing, "duplicate": True}
    if goal.manifest and goal.manifest.overwrite_existing:
        return None
    return fail(
        goal,
        "OutputExists",
        f"output exists: {goal.zip_key} was made from other inputs "
        "(set overwriteExisting: true in manifest.json to replace it)",
        write_record=False,
        fingerprint=plan.fingerprint,
    )


def fail(
    known: Target, code: str, message: str, *, write_record: bool = True, fingerprint: str | None = None
) -> dict[str, Any]:
    """Record (unless a finished record is there) and announce a failure, with what is known."""
    s3 = client("s3")
    study, output = known.locations()
    record = failed_record(
        name=posixpath.basename(known.study_path),
        location=f"s3://{known.trigger.bucket}/{known.trigger.study_prefix}",
        settings=known.settings.describe() if known.settings else None,
        error=message,
        code=code,
        extra={"inputFingerprint": fingerprint, "metadata": known.metadata, "finishedAt": now()},
    )
    if write_record:
        RecordStore(s3, known.cfg.target_bucket).put_failure(known.record_key, record)
    publish(client("events"), known.cfg.event_bus_name, event_detail(record, study=study, output=output))
    logger.warning("study failed", extra={"study": known.trigger.study_prefix, "code": code, "reason": message[:500]})
    return record
