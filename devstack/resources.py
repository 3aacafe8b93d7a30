"""What the local stack is: its region, stage and the names of the resources it made.

Shared by :mod:`devstack.stack` (which starts it) and :mod:`devstack.template` (which creates
the resources from serverless.yml's template), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REGION = "us-east-1"
STAGE = "local"


@dataclass(frozen=True)
class LocalStack:
    endpoint: str
    bucket: str
    queue_url: str
    dlq_url: str
    notification_queue_url: str
    bus_name: str
    source_prefix: str = "incoming/"
    target_prefix: str = "compressed/"

    def env(self) -> dict[str, str]:
        """What the worker (and any client) needs in its environment."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "DATA_BUCKET": self.bucket,
            "TARGET_BUCKET": self.bucket,
            "SOURCE_PREFIX": self.source_prefix,
            "TARGET_PREFIX": self.target_prefix,
            "EVENT_BUS_NAME": self.bus_name,
            "POWERTOOLS_SERVICE_NAME": "dicom-compression",
            "POWERTOOLS_METRICS_NAMESPACE": "DicomCompression",
            "POWERTOOLS_TRACE_DISABLED": "1",
        }


REPO = Path(__file__).resolve().parents[1]
