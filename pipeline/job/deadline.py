"""The time guard: a study that cannot finish before the Lambda's deadline fails early and
cleanly (recorded, announced, upload aborted) instead of being killed mid-way."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.job.errors import StudyFailed
from pipeline.study.listing import StudyObject

#: Seconds of work per input byte at one encoder (measured: 512x512 CT, J2K + verification).
SECONDS_PER_BYTE_PER_ENCODER = 0.12 / (512 * 1024)
SAFETY_MARGIN_MS = 30_000

Remaining = Callable[[], int]


def check_before_run(objects: list[StudyObject], remaining: Remaining | None, encoders: int) -> None:
    """The estimate before the run, from file sizes (for all but Deflated objects, their pixel
    bytes plus a header); :func:`pixel_guard` revises it as streamed objects reveal theirs."""
    if remaining is None:
        return
    total = sum(o.size for o in objects)
    fail_if_too_slow(total, encoders, remaining, f"{len(objects)} files, {total:,} bytes")


def pixel_guard(remaining: Remaining | None, encoders: int) -> Callable[[StudyObject, int], None] | None:
    """Re-checks the time once a streamed object's header says how many pixel bytes it holds:
    a Deflated object's file size says nothing of that (1 MB can inflate to 1 GB), so the
    estimate made from file sizes before the run is revised, and a study that cannot finish
    fails now, cleanly, rather than at the deadline."""
    if remaining is None:
        return None

    def check(obj: StudyObject, pixel_bytes: int) -> None:
        if pixel_bytes <= obj.size:
            return
        fail_if_too_slow(
            pixel_bytes,
            encoders,
            remaining,
            f"{obj.path} holds {pixel_bytes:,} bytes of pixel data in {obj.size:,} file bytes",
        )

    return check


def fail_if_too_slow(pixel_bytes: int, encoders: int, remaining: Remaining, what: str) -> None:
    needed_ms = 1000 * pixel_bytes * SECONDS_PER_BYTE_PER_ENCODER / max(encoders, 1) + SAFETY_MARGIN_MS
    if needed_ms > remaining():
        raise StudyFailed(
            "StudyTooLarge",
            f"study too large for the configured timeout: {what} "
            f"(about {needed_ms / 1000:.0f} s needed, {remaining() / 1000:.0f} s left)",
        )


def running_out(objects: list[StudyObject], remaining: Remaining | None) -> Callable[[int, int], None]:
    """A progress callback that stops the run (raises) once less than the safety margin is left."""
    study_bytes = sum(o.size for o in objects)

    def check(done: int, total: int) -> None:
        if remaining is not None and remaining() < SAFETY_MARGIN_MS:
            raise StudyFailed(
                "StudyTooLarge",
                f"study too large for the configured timeout: {total} files, "
                f"{study_bytes:,} bytes ({done} done when time ran out)",
            )

    return check
