"""The deployed job's configuration, from the Lambda's environment (serverless.yml sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.config import CompressionSettings, encoders_from_env, settings_from_env


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
    def from_env(cls, env: dict[str, str] | None = None) -> ServiceConfig:
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
