"""RELIABILITY.md's renderer (scripts/reliability_report.py): the figures it prints are the facts'
own, and a fact it needs that the run did not record fails the rendering instead of leaving a
stale or made-up number in its place."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from scripts import reliability_report as report
from tests.helpers.facts import FactStore

FILES = [
    "test_duplicates.py",
    "test_encoder_pool.py",
    "test_fuzz.py",
    "test_hostile.py",
    "test_kill.py",
    "test_phi.py",
    "test_poison.py",
    "test_s3_faults.py",
    "test_timeout.py",
]
RUN = {
    "date": "2031-02-03",
    "commit": "abc1234",
    "uncommitted_changes": False,
    "python": "3.11.7",
    "hypothesis": "6.0",
    "fuzz_examples": None,
    "seconds": 98.7,
    "exit_status": 0,
}


def _doc(facts: dict[str, dict[str, Any]], tests: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    if tests is None:
        tests = {f"tests/reliability/{name}::test_it": {"outcome": "passed", "seconds": 1.5} for name in FILES}
    return {"schema": report.SCHEMA, "run": dict(RUN), "tests": tests, "facts": facts}


def _fact(value: Any, op: str = "==", bound: Any = None, *, unit: str = "", varies: bool = False) -> dict[str, Any]:
    return {"value": value, "op": op, "bound": value if bound is None else bound, "unit": unit, "varies": varies}


class _Probe(report.Facts):
    """Makes up a distinct fact for every key the report asks for: the complete set it needs."""

    LISTS: ClassVar[dict[str, list[str]]] = {
        "poison.bodies": list(report.POISON_BODIES),
        "hostile.outname.cases": ["dotdot", "nul"],
    }

    def fact(self, key: str) -> dict[str, Any]:
        if key not in self.facts:
            self.facts[key] = _fact(self.LISTS.get(key, 1_001 + 17 * len(self.facts)))
        return super().fact(key)


@pytest.fixture(scope="module")
def complete() -> dict[str, Any]:
    probe = _Probe(_doc({}))
    for section in report.SECTIONS:
        section(probe)
    return _doc(probe.facts)


def test_a_small_facts_file_gives_its_figures(tmp_path: Path) -> None:
    """The encoder pool's section from its four facts (recorded as the test records them), and a
    figure that varies goes to the last column only, with its bound."""
    store = FactStore()
    facts = store.recorder("tests/reliability/test_encoder_pool.py::test_it")
    facts.setup("encoder_pool.runs", 7)
    facts.setup("encoder_pool.jobs_per_run", 321)
    facts.equal("encoder_pool.stalls", 0, 0)
    facts.equal("encoder_pool.runs_in_order", 7, 7)
    facts.bound("hostile.tiny.peak_rss_mib", 163, "<", 512, unit="MiB", varies=True)
    path = tmp_path / "facts.json"
    store.tests = {"tests/reliability/test_encoder_pool.py::test_it": {"outcome": "passed", "seconds": 1.0}}
    store.write(path, RUN)
    f = report.Facts(json.loads(path.read_text()))

    text = "\n".join(report.encoder_pool(f))
    assert "over 7 runs of 321 jobs" in text
    assert "| runs with every job back, once, in order, byte-identical | 7 | exact | |" in text
    assert "| waits on no connection | 0 | exact | |" in text
    assert f.row("peak RSS", "hostile.tiny.peak_rss_mib") == "| peak RSS | varies | < 512 MiB | 163 MiB |"
    with pytest.raises(report.RenderError, match="varies"):
        f.fig("hostile.tiny.peak_rss_mib")  # never in the text: it would change on every run


def test_the_report_prints_every_fact_of_a_complete_file(complete: dict[str, Any]) -> None:
    text = report.render(complete)
    numbers = [fact["value"] for fact in complete["facts"].values() if isinstance(fact["value"], int)]
    assert len(numbers) > 150
    missing = [n for n in numbers if f"{n:,}" not in text and f"={n}`" not in text]  # `LOCK_STALE_SECONDS=3`
    assert missing == []
    assert "2031-02-03 (UTC), commit `abc1234`," in text
    assert "| `test_kill.py::test_it` | passed | 1.5 |" in text  # a timing, in the timings table


def test_a_missing_fact_fails_loudly(complete: dict[str, Any]) -> None:
    for key in complete["facts"]:
        doc = copy.deepcopy(complete)
        del doc["facts"][key]
        with pytest.raises(report.MissingFact) as info:
            report.render(doc)
        assert key in str(info.value)


def test_a_fact_the_report_does_not_show_fails(complete: dict[str, Any]) -> None:
    doc = copy.deepcopy(complete)
    doc["facts"]["kill.something_new"] = _fact(3)
    with pytest.raises(report.RenderError, match=re.escape("kill.something_new")):
        report.render(doc)


def test_a_red_run_is_not_rendered(complete: dict[str, Any]) -> None:
    doc = copy.deepcopy(complete)
    doc["tests"]["tests/reliability/test_kill.py::test_it"]["outcome"] = "failed"
    with pytest.raises(report.RenderError, match="not a green run"):
        report.render(doc)
    doc = copy.deepcopy(complete)
    doc["run"]["exit_status"] = 1
    with pytest.raises(report.RenderError, match="not a green run"):
        report.render(doc)


def test_a_figure_that_varies_cannot_go_into_the_text(complete: dict[str, Any]) -> None:
    doc = copy.deepcopy(complete)
    doc["facts"]["kill.slices"]["varies"] = True
    with pytest.raises(report.RenderError, match=re.escape("kill.slices")):
        report.render(doc)


def test_main_leaves_the_report_alone_when_it_cannot_render(complete: dict[str, Any], tmp_path: Path) -> None:
    out, facts = tmp_path / "RELIABILITY.md", tmp_path / "facts.json"
    out.write_text("the last good report\n")
    doc = copy.deepcopy(complete)
    del doc["facts"]["phi.values_found"]
    facts.write_text(json.dumps(doc))
    assert report.main([str(facts), str(out)]) == 1
    assert out.read_text() == "the last good report\n"
    facts.write_text(json.dumps(complete))
    assert report.main([str(facts), str(out)]) == 0
    assert out.read_text() == report.render(complete)
