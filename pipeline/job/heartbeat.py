"""Progress a watcher can see: the "processing" record and the lock's refresh, rate-limited
(the engine reports every file and every frame)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pipeline.job.lock import StudyLock
from pipeline.job.plan import StudyPlan
from pipeline.job.store import RecordStore
from pipeline.outputs.record import processing_record

HEARTBEAT_SECONDS = 5.0


def now() -> str:
    """UTC with microseconds: the engine's finishedAt has the same precision (one format)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Heartbeat:
    def __init__(self, plan: StudyPlan, store: RecordStore, lock: StudyLock, started: str) -> None:
        self.plan = plan
        self.store = store
        self.lock = lock
        self.started = started
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        moment = time.monotonic()
        if self._last and moment - self._last < HEARTBEAT_SECONDS:
            return
        self._last = moment
        goal = self.plan.target
        study, output = goal.locations()
        self.store.put(
            goal.record_key,
            processing_record(
                study=study,
                output=output,
                done=done,
                total=total,
                heartbeat=now(),
                started=self.started,
                fingerprint=self.plan.fingerprint,
                settings=self.plan.settings.describe(),
            ),
        )
        self.lock.refresh()  # still alive
