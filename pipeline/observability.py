"""One structured JSON logger for the whole pipeline (aws-lambda-powertools).

What may be logged: study folder keys, counts, sizes, timings, transfer syntaxes, reasons.
What may not: any DICOM header value (names, IDs, dates, UIDs) -- pydicom's own logger is
silenced in :mod:`pipeline.files.process` for that reason.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "dicom-compression"))
