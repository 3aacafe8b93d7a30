"""The shape the code keeps (issue 15): small functions, and imports that flow one way —
``handlers`` -> ``pipeline``; ``devstack`` -> both; never ``pipeline`` -> ``handlers``/``devstack``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 60


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_function_in_pipeline_or_handlers_is_over_60_lines() -> None:
    long = []
    for package in ("pipeline", "handlers"):
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_pipeline_imports_neither_handlers_nor_the_dev_stack() -> None:
    upward = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules("pipeline")
        for name in _imports(path)
        if name.split(".")[0] in ("handlers", "devstack", "bench", "tests")
    ]
    assert upward == []


def test_handlers_import_only_the_pipeline_and_libraries() -> None:
    found = [
        f"{p.relative_to(ROOT)} imports {n}"
        for p in _modules("handlers")
        for n in _imports(p)
        if n.split(".")[0] in ("devstack", "bench", "tests")
    ]
    assert found == []


def test_dev_stack_modules_import_no_circle() -> None:
    graph = {f"devstack.{p.stem}": {n for n in _imports(p) if n.startswith("devstack.")} for p in _modules("devstack")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert circles == []
