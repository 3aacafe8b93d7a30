"""Where things are: the repository, its committed fixture study, the real DICOM corpus."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
FIXTURE_STUDY = FIXTURES / "studies" / "ct-nested-001"


def corpus_dir() -> Path:
    """The real corpus: ``$DICOM_CORPUS``, else ``../shared/dicom-corpus`` beside the repository."""
    return Path(os.environ.get("DICOM_CORPUS", ROOT.parent / "shared" / "dicom-corpus"))
