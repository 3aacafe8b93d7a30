"""Compression settings: one immutable object, built from env, a manifest or the CLI.

The settings take part in the output's identity (new lossy UIDs, the idempotency fingerprint),
so they are normalised here once and serialised canonically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Mode = Literal["lossy", "lossless"]
Codec = Literal["j2k", "htj2k"]

DEFAULT_RATE = 100.0
MAX_RATE = 10_000.0


class SettingsError(ValueError):
    """A setting that cannot be honoured; the message is safe to show to the user."""


@dataclass(frozen=True)
class CompressionSettings:
    """What to do with every image of one study."""

    mode: Mode = "lossy"
    rate: float = DEFAULT_RATE
    codec: Codec = "j2k"
    verify: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("lossy", "lossless"):
            raise SettingsError(f"mode must be 'lossy' or 'lossless', not {self.mode!r}")
        if self.codec not in ("j2k", "htj2k"):
            raise SettingsError(f"codec must be 'j2k' or 'htj2k', not {self.codec!r}")
        if self.mode == "lossy" and not (1.0 < float(self.rate) <= MAX_RATE):
            raise SettingsError(f"compressionRate must be above 1 and at most {MAX_RATE:g} for lossy mode")

    @property
    def lossless(self) -> bool:
        return self.mode == "lossless"

    def describe(self) -> dict[str, Any]:
        """The settings as recorded in results and events (rate omitted when it has no effect)."""
        out: dict[str, Any] = asdict(self)
        if self.lossless:
            out["rate"] = None
        return out

    def fingerprint(self) -> str:
        """Stable digest of what changes output pixels (verification does not)."""
        key = {"mode": self.mode, "codec": self.codec, "rate": None if self.lossless else float(self.rate)}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(
        self,
        *,
        rate: float | None = None,
        mode: Mode | None = None,
        codec: Codec | None = None,
        verify: bool | None = None,
    ) -> "CompressionSettings":
        """Apply the old system's conventions: ``compressionRate: 0`` means lossless."""
        new_mode = mode or self.mode
        new_rate = self.rate if rate is None else float(rate)
        if rate is not None and float(rate) == 0:
            new_mode, new_rate = "lossless", self.rate
        elif rate is not None and mode is None:
            new_mode = "lossy"
        return replace(
            self,
            mode=new_mode,
            rate=new_rate,
            codec=codec or self.codec,
            verify=self.verify if verify is None else verify,
        )


def settings_from_env(env: dict[str, str] | None = None) -> CompressionSettings:
    """Defaults for a deployment: ``COMPRESSION_RATE`` (0 = lossless), ``CODEC``, ``VERIFY``."""
    env = dict(os.environ) if env is None else env
    base = CompressionSettings()
    raw_rate = env.get("COMPRESSION_RATE", "").strip()
    try:
        rate = float(raw_rate) if raw_rate else None
    except ValueError as exc:
        raise SettingsError(f"COMPRESSION_RATE must be a number, not {raw_rate!r}") from exc
    codec = env.get("CODEC", "").strip().lower() or None
    verify_raw = env.get("VERIFY", "").strip().lower()
    verify = None if not verify_raw else verify_raw not in ("0", "false", "no", "off")
    return base.with_overrides(rate=rate, codec=codec, verify=verify)  # type: ignore[arg-type]
