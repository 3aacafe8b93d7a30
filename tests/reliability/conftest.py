"""The recorder of the reliability tests: ``facts`` (one test's checks, tests/helpers/facts.py)
and ``fact_store`` (for module fixtures). With ``RELIABILITY_FACTS=path`` the session's facts,
each test's outcome and its duration are written to that JSON file at the end (``make
reliability`` renders RELIABILITY.md from it); without it nothing is written."""

from __future__ import annotations

import time

import pytest

from tests.helpers.facts import STORE, Facts, FactStore, facts_path, run_description
from tests.helpers.paths import ROOT

_STARTED = time.monotonic()


@pytest.fixture(scope="session")
def fact_store() -> FactStore:
    return STORE


@pytest.fixture
def facts(request: pytest.FixtureRequest) -> Facts:
    return STORE.recorder(request.node.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    STORE.outcome(report.nodeid, report.when, report.outcome, report.duration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = facts_path()
    if path is None:
        return
    run = run_description(ROOT, time.monotonic() - _STARTED)
    run["exit_status"] = int(exitstatus)
    STORE.write(path if path.is_absolute() else ROOT / path, run)
