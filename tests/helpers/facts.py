"""What the reliability tests measured, as facts for RELIABILITY.md (``make reliability``).

A test records a figure only through a check, so that the report can show no number that no
test asserts:

- ``facts.equal(key, value, expected)`` asserts ``value == expected`` (exact: the count is fixed
  by the test's construction, or follows deterministically from the corpus and the code);
- ``facts.bound(key, value, op, bound)`` asserts ``value <op> bound`` (``>=``, ``>``, ``<=``, ``<``);
  ``facts.within(key, value, low, high)`` asserts ``low <= value < high``; ``facts.contains``
  asserts a text holds a part. ``varies=True`` marks a figure that differs from run to run
  (memory, polls, anything that depends on the machine's speed): the report shows it apart;
- ``facts.setup(key, value)`` records an input the test chose (a size, a count, a limit): true by
  construction, recorded so that the report takes it from the test instead of retyping it.

The facts go to the JSON file named by ``RELIABILITY_FACTS`` at the end of the session, with
every test's outcome and duration (tests/reliability/conftest.py); without it nothing is
written. The checks run either way: they are the tests' assertions.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "RELIABILITY_FACTS"
SCHEMA = 1
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "within": lambda v, b: b[0] <= v < b[1],
    "contains": lambda v, b: b.lower() in v.lower(),
    "setup": lambda v, b: True,
}


class FactStore:
    """Every fact of the session, and every test's outcome."""

    def __init__(self) -> None:
        self.facts: dict[str, dict[str, Any]] = {}
        self.tests: dict[str, dict[str, Any]] = {}

    def recorder(self, where: str) -> Facts:
        return Facts(self, where)

    def add(self, key: str, fact: dict[str, Any]) -> None:
        old = self.facts.get(key)
        if old is not None and {**old, "test": None} != {**fact, "test": None}:
            raise ValueError(f"fact {key!r} recorded twice with different values: {old} and {fact}")
        if old is None:
            self.facts[key] = fact

    def outcome(self, nodeid: str, when: str, outcome: str, seconds: float) -> None:
        """One phase (setup, call, teardown) of a test: the test failed if any phase failed."""
        entry = self.tests.setdefault(nodeid, {"outcome": "passed", "seconds": 0.0})
        entry["seconds"] = round(entry["seconds"] + seconds, 2)
        if outcome == "failed":
            entry["outcome"] = "failed" if when == "call" else "error"
        elif outcome == "skipped" and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"

    def document(self, run: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run": run,
            "tests": dict(sorted(self.tests.items())),
            "facts": dict(sorted(self.facts.items())),
        }

    def write(self, path: Path, run: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document(run), indent=1, ensure_ascii=False) + "\n")


class Facts:
    """The checks one test (or fixture) records its figures through; each returns the value."""

    def __init__(self, store: FactStore, where: str) -> None:
        self.store, self.where = store, where

    def _check(self, key: str, value: Any, op: str, bound: Any, *, unit: str, varies: bool, of: Any = None) -> Any:
        if not OPS[op](value, bound):
            shown = f"{bound[0]!r} <= value < {bound[1]!r}" if op == "within" else f"{op} {bound!r}"
            raise AssertionError(f"{key}: {value!r} is not {shown}")
        fact = {"value": value, "op": op, "bound": bound, "unit": unit, "varies": varies, "test": self.where}
        if of is not None:
            fact["of"] = of
        self.store.add(key, fact)
        return value

    def equal(self, key: str, value: Any, expected: Any, *, unit: str = "", of: Any = None) -> Any:
        return self._check(key, value, "==", expected, unit=unit, varies=False, of=of)

    def bound(
        self, key: str, value: Any, op: str, bound: Any, *, unit: str = "", varies: bool = False, of: Any = None
    ) -> Any:
        assert op in (">=", ">", "<=", "<"), op
        return self._check(key, value, op, bound, unit=unit, varies=varies, of=of)

    def within(self, key: str, value: Any, low: Any, high: Any, *, unit: str = "", varies: bool = False) -> Any:
        return self._check(key, value, "within", [low, high], unit=unit, varies=varies)

    def contains(self, key: str, text: str, part: str) -> str:
        return str(self._check(key, text, "contains", part, unit="", varies=False))

    def setup(self, key: str, value: Any, *, unit: str = "") -> Any:
        return self._check(key, value, "setup", None, unit=unit, varies=False)


#: The session's store (tests/reliability/conftest.py fills it and writes it out).
STORE = FactStore()


def facts_path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def run_description(root: Path, seconds: float) -> dict[str, Any]:
    """What identifies this run: the date (UTC), the commit, versions; the wall time (a timing)."""
    import datetime

    import hypothesis

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    # Uncommitted changes to tracked files, the report itself aside (make reliability rewrites it).
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)RELIABILITY.md")
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_changes": bool(changes),
        "python": sys.version.split()[0],
        "hypothesis": hypothesis.__version__,
        "fuzz_examples": os.environ.get("FUZZ_EXAMPLES") or None,
        "seconds": round(seconds, 1),
    }
