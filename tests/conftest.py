"""Shared fixtures (the real corpus ../shared/dicom-corpus, the committed study, a local stack) and
the level markers.

Every test file lives in one level folder, and gets that level's marker from it (registered in
pytest.ini; ``--strict-markers``), so each level runs alone by path or by marker
(``pytest tests/unit`` or ``pytest -m unit``):

- ``unit``: one piece of code on its own, no AWS at all (it may read the corpus, fork the
  encoders, start a bare interpreter to see a fresh process, or run a decoder as an oracle).
- ``integration``: pieces together in this process: the engine over a whole study, the handler
  and the service on in-process moto (``mock_aws``).
- ``e2e``: the product as processes: the CLI, devstack and its moto server on 127.0.0.1, a browser.
- ``reliability``, ``deploy``, ``interop``: see those folders.

Helpers shared by the tests are the package tests/helpers (``from tests.helpers.x import y``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.layout import level_of
from tests.helpers.paths import FIXTURE_STUDY, corpus_dir


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of its level folder (tests/unit -> ``unit``, ...)."""
    for item in items:
        level = level_of(item.path)
        if level is not None:
            item.add_marker(getattr(pytest.mark, level))


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_dir()
    if not (path / "MANIFEST.csv").exists():
        pytest.fail(f"DICOM corpus not found at {path} (set DICOM_CORPUS)")
    return path


@pytest.fixture(scope="session")
def manifest(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "MANIFEST.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def fixture_study() -> Path:
    return FIXTURE_STUDY


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One moto server + the deployed resources per test module (``VISIBILITY_TIMEOUT`` in the module)."""
    from devstack.stack import RunningStack

    visibility = getattr(request.module, "VISIBILITY_TIMEOUT", 10)
    with RunningStack(visibility_timeout=visibility) as running:
        from handlers import worker

        saved = worker.metrics.namespace
        worker.metrics.namespace = running.env()["POWERTOOLS_METRICS_NAMESPACE"]  # read at import time
        try:
            yield running
        finally:
            worker.metrics.namespace = saved


def artifact_runtime_line() -> str:
    """Say up front whether the deploy tests will run the handler from the artifact, and with which
    Python (they skip, saying why, without a CPython 3.12)."""
    from tests.helpers.lambda_runtime import PYTHON312_PLACES, host_arch, python312

    exe, arch = python312(), host_arch()
    if exe and arch:
        return f"deploy: the handler runs from the unzipped {arch} artifact under CPython 3.12 at {exe}"
    why = "no CPython 3.12 found in " + ", ".join(PYTHON312_PLACES) if not exe else "no artifact for this CPU"
    return f"deploy: the tests that run the handler from the artifact will SKIP: {why}"


def pytest_report_header(config: pytest.Config) -> str:
    return artifact_runtime_line()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The same line at the end, where ``make test``'s ``-q`` output shows it."""
    terminalreporter.write_line(artifact_runtime_line())
