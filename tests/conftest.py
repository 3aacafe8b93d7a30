"""Shared fixtures: the real corpus (../shared/dicom-corpus), the committed study, settings, a local stack."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.paths import FIXTURE_STUDY, corpus_dir


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
