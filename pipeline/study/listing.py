"""Which objects make up a study, under which ZIP names, in which order.

Order is natural and per path component, so ``DCT2`` comes before ``DCT10`` and all of
``CT1/`` comes before ``CT2/``; ties are broken by the raw name, so it is total and stable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TRIGGER_NAMES = frozenset({"_READY", "manifest.json"})
_DIGITS = re.compile(r"(\d+)")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")


@dataclass(frozen=True)
class StudyObject:
    """One source object: its path relative to the study folder, its size and its ZIP entry name."""

    path: str
    size: int
    entry_name: str = ""
    #: Source-specific handle (an S3 key, a filesystem path).
    locator: str = ""
    #: Content version as the source knows it (an S3 ETag); part of the input fingerprint.
    version: str = ""


@dataclass(frozen=True)
class Ignored:
    """An object seen in the study folder that is deliberately not part of the study."""

    path: str
    reason: str


#: One run of a path component in :func:`natural_key`: ``(0, number)`` or ``(1, folded text)``.
_Run = tuple[int, int | str]


def natural_key(path: str) -> tuple[tuple[tuple[_Run, ...], ...], str]:
    """Sort key comparing path components, numbers by value, text case-insensitively."""
    parts = []
    for component in path.split("/"):
        key: list[_Run] = []
        for i, chunk in enumerate(_DIGITS.split(component)):
            if i % 2:
                key.append((0, int(chunk)))
            elif chunk:
                key.append((1, chunk.casefold()))
        parts.append(tuple(key))
    return (tuple(parts), path)


def _escape_char(ch: str) -> str:
    if "\udc80" <= ch <= "\udcff":  # an undecodable byte kept by surrogateescape
        return f"%{ord(ch) - 0xDC00:02X}"
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def _escape_component(component: str) -> str:
    if component in (".", ".."):
        return component.replace(".", "%2E")
    escaped = _UNSAFE_CHARS.sub(lambda m: _escape_char(m.group()), component)
    if len(escaped) >= 2 and escaped[1] == ":" and escaped[0].isalpha():
        escaped = escaped[0] + "%3A" + escaped[2:]
    return escaped


def safe_entry_name(path: str) -> str:
    """A ZIP entry name that cannot leave the archive root, percent-escaping what could."""
    components = path.split("/")
    while components and components[0] == "":  # absolute paths become relative
        components.pop(0)
    escaped = [_escape_component(c) if c else "%" for c in components]
    return "/".join(escaped) or "%"


def order_study(objects: Iterable[StudyObject]) -> list[StudyObject]:
    """Natural order with a unique, safe entry name for each object."""
    ordered = sorted(objects, key=lambda o: natural_key(o.path))
    seen: set[str] = set()
    out = []
    for obj in ordered:
        name = safe_entry_name(obj.path)
        candidate, n = name, 1
        while candidate in seen:  # two escaped names met: keep both, visibly
            n += 1
            candidate = f"{name}~{n}"
        seen.add(candidate)
        out.append(StudyObject(obj.path, obj.size, candidate, obj.locator or obj.path, obj.version))
    return out


def split_triggers(objects: Iterable[StudyObject]) -> tuple[list[StudyObject], list[Ignored]]:
    """Drop the study's own trigger objects and folder placeholders, recording why."""
    keep, ignored = [], []
    for obj in objects:
        if obj.path in TRIGGER_NAMES:
            ignored.append(Ignored(obj.path, "trigger object, not part of the study"))
        elif obj.path.endswith("/") and obj.size == 0:
            ignored.append(Ignored(obj.path, "folder placeholder"))
        else:
            keep.append(obj)
    return keep, ignored
