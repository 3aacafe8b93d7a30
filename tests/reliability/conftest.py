"""Reliability tests: duplicates, kills, time limits, S3 faults, poison and hostile input, fuzzing, PHI.

Everything here runs on real parts: a moto server (``devstack.stack.RunningStack``), the
real handler driven by the real ``poll_once`` or the real ``python -m devstack poll`` process,
real DICOM from the corpus. Select with ``-m reliability``; see RELIABILITY.md for the results.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability: duplicates, worker kills, time limits, S3 faults, poison/hostile input, fuzzing, no PHI out "
        "(tests/reliability, see RELIABILITY.md)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


# The module-scoped ``stack`` fixture (moto server + resources) is in tests/conftest.py.
