"""Every test lives in one of the six level folders and carries that level's marker only, so that
each level runs alone by path (``pytest tests/unit``) and by marker (``pytest -m unit``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.layout import LEVELS, TESTS, level_of


def test_every_test_lives_in_a_level_folder_and_carries_its_marker(request: pytest.FixtureRequest) -> None:
    # Every test file under tests/ (collected by this run or not): none at the top, in
    # tests/helpers or in a folder that is no level.
    files = {p.resolve() for pattern in ("test_*.py", "*_test.py") for p in TESTS.rglob(pattern)}
    assert Path(__file__).resolve() in files
    stray = sorted(p.relative_to(TESTS).as_posix() for p in files if level_of(p) is None)
    assert stray == [], f"test files outside tests/{{{','.join(LEVELS)}}}/: {stray}"

    # Every test this run collected: in a level folder, with that level's marker and no other.
    assert request.node in request.session.items
    for item in request.session.items:
        level = level_of(item.path)
        assert level is not None, f"{item.nodeid} is not in a level folder"
        assert [m.name for m in item.iter_markers() if m.name in LEVELS] == [level], item.nodeid

    # The levels are folders and registered markers (pytest.ini, --strict-markers).
    registered = {line.split(":", 1)[0].strip() for line in request.config.getini("markers")}
    assert set(LEVELS) <= registered
    assert all((TESTS / level / "__init__.py").is_file() for level in LEVELS)
