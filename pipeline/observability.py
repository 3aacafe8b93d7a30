"""One structured JSON logger for the whole pipeline (aws-lambda-powertools).

What may be logged: study folder keys, counts, sizes, timings, transfer syntaxes, reasons.
What may not: any DICOM header value (names, IDs, dates, UIDs) -- pydicom's own logger is
silenced in :mod:`pipeline.files.process` for that reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

_F = TypeVar("_F", bound=Callable[..., Any])

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "dicom-compression"))


class _Untraced:
    """Stands in for powertools' Tracer where tracing is off: its decorators change nothing."""

    def capture_lambda_handler(self, handler: _F) -> _F:
        return handler

    def capture_method(self, method: _F) -> _F:
        return method


def make_tracer() -> Tracer | _Untraced:
    """powertools' Tracer (X-Ray) where tracing is on, else a stand-in. The X-Ray SDK it imports
    costs ~20 MB of heap here, and again in every encoder forked from this process, plus import
    time: nothing to pay for where ``POWERTOOLS_TRACE_DISABLED`` turns tracing off (the local
    stack; on Lambda it is on)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return _Untraced()
    from aws_lambda_powertools import Tracer

    return Tracer()
