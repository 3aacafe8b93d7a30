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

from pipeline.files.identity import DEFAULT_UID_ROOT, normalise_root

Mode = Literal["lossy", "lossless"]
Codec = Literal["j2k", "htj2k"]

DEFAULT_RATE = 100.0
MAX_RATE = 10_000.0
#: The quality floor: no lossy image below this range-PSNR (README "Quality floor"); 0 = off.
DEFAULT_MIN_PSNR = 40.0
MAX_MIN_PSNR = 120.0


class SettingsError(ValueError):
    """A setting that cannot be honoured; the message is safe to show to the user."""


@dataclass(frozen=True)
class CompressionSettings:
    """What to do with every image of one study."""

    mode: Mode = "lossy"
    rate: float = DEFAULT_RATE
    codec: Codec = "j2k"
    verify: bool = True
    min_psnr: float = DEFAULT_MIN_PSNR
    #: Encode RGB through JPEG 2000's colour transform (YBR_RCT/YBR_ICT); off by default, as
    #: consumers such as Orthanc's GDCM plugin cannot render those (README "Interoperability").
    colour_transform: bool = False
    #: Root of the UIDs this software makes (``UID_ROOT``; README "Configuration").
    uid_root: str = DEFAULT_UID_ROOT

    def __post_init__(self) -> None:
        if self.mode not in ("lossy", "lossless"):
            raise SettingsError(f"mode must be 'lossy' or 'lossless', not {self.mode!r}")
        if self.codec not in ("j2k", "htj2k"):
            raise SettingsError(f"codec must be 'j2k' or 'htj2k', not {self.codec!r}")
        if self.mode == "lossy" and not (1.0 < float(self.rate) <= MAX_RATE):
            raise SettingsError(f"compressionRate must be above 1 and at most {MAX_RATE:g} for lossy mode")
        try:
            object.__setattr__(self, "uid_root", normalise_root(self.uid_root))
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        if isinstance(self.min_psnr, bool) or not 0 <= float(self.min_psnr) <= MAX_MIN_PSNR:
            raise SettingsError(f"minPsnrDb must be between 0 (off) and {MAX_MIN_PSNR:g}")

    @property
    def lossless(self) -> bool:
        return self.mode == "lossless"

    @property
    def floor(self) -> float | None:
        """The range-PSNR floor in force, or None (off, or nothing lossy to hold to it)."""
        return None if self.lossless or not self.min_psnr else float(self.min_psnr)

    def describe(self) -> dict[str, Any]:
        """The settings as recorded in results and events (rate omitted when it has no effect)."""
        out: dict[str, Any] = asdict(self)
        del out["min_psnr"]
        if out.pop("colour_transform"):
            out["colourTransform"] = True
        if out.pop("uid_root") != DEFAULT_UID_ROOT:
            out["uidRoot"] = self.uid_root
        out["minPsnrDb"] = self.floor
        if self.lossless:
            out["rate"] = None
        return out

    def fingerprint(self) -> str:
        """Stable digest of what changes output pixels (verification does not)."""
        key: dict[str, Any] = {
            "mode": self.mode,
            "codec": self.codec,
            "rate": None if self.lossless else float(self.rate),
        }
        if self.floor is not None:  # off: the same key, so the same UIDs and bytes as without a floor
            key["minPsnrDb"] = self.floor
        if self.colour_transform:  # only when on: greyscale UIDs do not depend on the default
            key["colourTransform"] = True
        if self.uid_root != DEFAULT_UID_ROOT:  # another root: other UIDs, so another output
            key["uidRoot"] = self.uid_root
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(
        self,
        *,
        rate: float | None = None,
        mode: Mode | None = None,
        codec: Codec | None = None,
        verify: bool | None = None,
        min_psnr: float | None = None,
    ) -> CompressionSettings:
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
            min_psnr=self.min_psnr if min_psnr is None else float(min_psnr),
        )


def settings_from_env(env: dict[str, str] | None = None) -> CompressionSettings:
    """Defaults for a deployment: ``COMPRESSION_RATE`` (0 = lossless), ``CODEC``, ``VERIFY``,
    ``MIN_PSNR_DB`` (the quality floor, 0 = off), ``COLOUR_TRANSFORM`` (RGB as YBR_RCT/ICT), ``UID_ROOT`` (root of new UIDs)."""
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
    raw_floor = env.get("MIN_PSNR_DB", "").strip()
    try:
        floor = float(raw_floor) if raw_floor else None
    except ValueError as exc:
        raise SettingsError(f"MIN_PSNR_DB must be a number of dB, not {raw_floor!r}") from exc
    transform = env.get("COLOUR_TRANSFORM", "").strip().lower() in ("1", "true", "yes", "on")
    return replace(
        base.with_overrides(rate=rate, codec=codec, verify=verify, min_psnr=floor),  # type: ignore[arg-type]
        colour_transform=transform,
        uid_root=env.get("UID_ROOT", "").strip() or DEFAULT_UID_ROOT,
    )


def encoders_from_env(env: dict[str, str] | None = None) -> int | None:
    """``ENCODERS``: how many encoder processes (``WORKERS`` is its older name); None: as the host allows."""
    env = dict(os.environ) if env is None else env
    value = env.get("ENCODERS") or env.get("WORKERS")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"ENCODERS must be a whole number, not {value!r}") from None
