"""How a study job ends other than by succeeding: later, failed (recorded), or to the DLQ."""

from __future__ import annotations


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
