"""The memory budget: how many bytes of a study may be in flight at once, and what that implies.

Memory must not depend on the size of a study or of any one object. The engine therefore
admits work by bytes, not by count: a file or frame is read only while the bytes already read
and not yet in the ZIP stay under ``in_flight``; an object larger than ``stream_threshold`` is
never read whole (its header is parsed alone and its frames stream to every encoder); an
object's compressed frames wait for assembly in memory up to ``spool_memory``, then in a
temporary file. Each encoder holds one file or frame at a time, so its working set is a few
times ``stream_threshold`` at most, whatever the study.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.host import MIB, available_memory

#: Resident memory of the parent and of each encoder before any study data (measured: ~70 and
#: ~45 MiB with pydicom, numpy, openjpeg, boto3 and powertools loaded).
PARENT_BASE = 70 * MIB
ENCODER_BASE = 50 * MIB
#: More bytes in flight buy no speed: two encoders stay busy with a few slices or frames queued
#: each; the rest only costs memory (and on a 1,769 MB Lambda, the margin against OOM).
MAX_IN_FLIGHT = 128 * MIB
MIN_IN_FLIGHT = 16 * MIB


class BudgetError(ValueError):
    """A budget override that cannot be honoured."""


@dataclass(frozen=True)
class MemoryBudget:
    """Byte limits for one study run; see the module docstring."""

    in_flight: int
    stream_threshold: int
    spool_memory: int
    memory: int

    @classmethod
    def for_host(cls, encoders: int, *, memory: int | None = None, in_flight: int | None = None) -> MemoryBudget:
        """The budget for ``encoders`` encoders on this host (or on ``memory`` bytes): a quarter of
        what is left after the processes' own baseline, between MIN_IN_FLIGHT and MAX_IN_FLIGHT,
        unless ``in_flight`` overrides it."""
        memory = memory or available_memory()
        if in_flight is None:
            spare = memory - PARENT_BASE - encoders * ENCODER_BASE
            in_flight = max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, spare // 4))
        if in_flight < 1 * MIB:
            raise BudgetError(f"the in-flight memory budget must be at least 1 MiB, not {in_flight:,} bytes")
        return cls(
            in_flight=in_flight,
            stream_threshold=max(in_flight // 8, 256 * 1024),
            spool_memory=in_flight // 16,
            memory=memory,
        )

    def describe(self) -> dict[str, Any]:
        """As the result record reports it (``timings.memoryBudget``)."""
        return {
            "memoryBytes": self.memory,
            "inFlightBytes": self.in_flight,
            "streamThresholdBytes": self.stream_threshold,
            "spoolMemoryBytes": self.spool_memory,
        }


def budget_override(env: dict[str, str] | None = None) -> int | None:
    """``MEMORY_BUDGET_MB`` from the environment, in bytes (``None`` when unset)."""
    env = dict(os.environ) if env is None else env
    raw = env.get("MEMORY_BUDGET_MB", "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise BudgetError(f"MEMORY_BUDGET_MB must be a number of MiB, not {raw!r}") from exc
    return int(value * MIB)
