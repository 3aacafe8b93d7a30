"""The tests' layout: one folder per level under tests/, each level a pytest marker of the same
name (registered in pytest.ini, applied from the folder by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: The level folders under tests/; every test file lives in one of them.
LEVELS = ("unit", "integration", "e2e", "reliability", "deploy", "interop")


def level_of(path: Path) -> str | None:
    """The level of the test file at ``path`` (its folder under tests/), or None outside them."""
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in LEVELS else None
