"""Which objects make up a study, in which order, under which ZIP entry names.

Order is the study's reading order (natural, per path component, case-insensitive) and names must
be safe for every extractor (``pipeline.archive.check_entry_name``) whatever the source called
the file.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive import UnsafeEntryName, check_entry_name
from pipeline.engine import Study
from pipeline.study.listing import (
    StudyObject,
    order_study,
    safe_entry_name,
    split_triggers,
)
from pipeline.study.source import LocalStudySource


def ordered_paths(paths: list[str]) -> list[str]:
    return [o.path for o in order_study(StudyObject(p, 0) for p in paths)]


def entry_names(paths: list[str]) -> list[str]:
    return [o.entry_name for o in order_study(StudyObject(p, 0) for p in paths)]


def is_valid_entry(name: str) -> bool:
    try:
        check_entry_name(name)
    except UnsafeEntryName:
        return False
    return True


# --------------------------------------------------------------------------- natural order


def test_numbers_compare_by_value():
    assert ordered_paths(["DCT10", "DCT2", "DCT1", "DCT100", "DCT20"]) == ["DCT1", "DCT2", "DCT10", "DCT20", "DCT100"]
    assert ordered_paths(["CT2/I100", "CT2/I50", "CT2/I10", "CT2/I5"]) == ["CT2/I5", "CT2/I10", "CT2/I50", "CT2/I100"]
    # Several numbers in one name: each compares by value.
    assert ordered_paths(["S10_I2", "S2_I10", "S2_I9", "S10_I1"]) == ["S2_I9", "S2_I10", "S10_I1", "S10_I2"]


def test_folders_are_contiguous_and_in_natural_order():
    paths = [
        "CT10/I1",
        "CT2/I100",
        "CT1/I100",
        "CT2/I50",
        "CT1.txt",
        "CT1/I50",
        "CT1/sub/I1",
        "CT1x/I1",
        "CT2/I1",
        "report/sr.dcm",
        "DICOMDIR",
        "CT1/I9",
    ]
    got = ordered_paths(paths)
    tops = [p.split("/")[0] for p in got]
    # Every folder's entries form one block, and blocks come in natural order.
    blocks = [k for k, _ in itertools.groupby(tops)]
    assert len(blocks) == len(set(blocks)), got
    assert blocks.index("CT1") < blocks.index("CT2") < blocks.index("CT10"), got
    ct1 = [p for p in got if p.startswith("CT1/")]
    assert ct1.index("CT1/I9") < ct1.index("CT1/I50") < ct1.index("CT1/I100"), got
    ct2 = [p for p in got if p.startswith("CT2/")]
    assert ct2 == ["CT2/I1", "CT2/I50", "CT2/I100"]


def test_text_compares_case_insensitively():
    assert ordered_paths(["gamma", "Delta", "beta", "Alpha"]) == ["Alpha", "beta", "Delta", "gamma"]
    assert ordered_paths(["series/b.dcm", "Report/a.dcm", "CT/x", "ct1/y"]) == [
        "CT/x",
        "ct1/y",
        "Report/a.dcm",
        "series/b.dcm",
    ]


def test_case_does_not_override_the_numbers_that_follow():
    assert ordered_paths(["DCT10", "dct2"]) == ["dct2", "DCT10"]
    assert ordered_paths(["CT10/I1", "ct2/I1"]) == ["ct2/I1", "CT10/I1"]
    assert ordered_paths(["A10", "a2"]) == ["a2", "A10"]
    assert ordered_paths(["report/b.dcm", "Report2/a.dcm"]) == ["report/b.dcm", "Report2/a.dcm"]
    got = ordered_paths(["I10", "i01", "I1", "I001", "i1"])
    assert got[-1] == "I10" and set(got[:-1]) == {"i01", "I1", "I001", "i1"}


def test_leading_zeros_only_break_ties():
    assert ordered_paths(["I01b", "I1a"]) == ["I1a", "I01b"]
    assert ordered_paths(["S01/I2", "S1/I1"]) == ["S1/I1", "S01/I2"]


def test_order_is_total_and_deterministic_for_names_equal_but_for_case_or_zeros():
    paths = ["I1", "I01", "i1", "I001", "i01", "I1/x", "i1/x", "I01/x", "a", "A", "A0", "a00", "a0"]
    reference = order_study(StudyObject(p, 0) for p in paths)
    assert sorted(o.path for o in reference) == sorted(paths)
    rng = random.Random(1234)
    for _ in range(200):
        shuffled = paths[:]
        rng.shuffle(shuffled)
        again = order_study(StudyObject(p, 0) for p in shuffled)
        assert [(o.path, o.entry_name) for o in again] == [(o.path, o.entry_name) for o in reference]
    assert len({o.entry_name for o in reference}) == len(paths)
    # Value order holds across the zero-padding ties: all the 1s before the 10.
    got = ordered_paths(["I10", "I01", "I1", "I001"])
    assert got[-1] == "I10" and set(got[:-1]) == {"I01", "I1", "I001"}


# --------------------------------------------------------------------------- triggers


def _touch(root: Path, rel: str, data: bytes = b"x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_trigger_objects_at_the_root_are_excluded_with_a_reason(tmp_path):
    for rel in ("_READY", "manifest.json", "sub/manifest.json", "sub/_READY", "CT1/I10", "readme.txt"):
        _touch(tmp_path, rel, b"{}" if rel.endswith(".json") else b"data")
    study = Study.from_source(LocalStudySource(tmp_path))
    assert [o.path for o in study.objects] == ["CT1/I10", "readme.txt", "sub/_READY", "sub/manifest.json"]
    ignored = {i.path: i.reason for i in study.ignored}
    assert set(ignored) == {"_READY", "manifest.json"}
    assert all("trigger" in reason for reason in ignored.values()), ignored


def test_split_triggers_drops_folder_placeholders_only():
    objects = [
        StudyObject("CT1/", 0),
        StudyObject("CT1/I1", 10),
        StudyObject("_READY", 0),
        StudyObject("empty.dcm", 0),
        StudyObject("sub/manifest.json", 5),
    ]
    keep, ignored = split_triggers(objects)
    assert [o.path for o in keep] == ["CT1/I1", "empty.dcm", "sub/manifest.json"]
    assert {i.path for i in ignored} == {"CT1/", "_READY"}
    assert all(i.reason for i in ignored)


# --------------------------------------------------------------------------- entry names


HOSTILE = [
    "../x",
    "../../etc/passwd",
    "a/../../x",
    "./x",
    ".",
    "..",
    "/abs/x",
    "//abs/x",
    "/",
    "",
    "a\\b",
    "..\\..\\x",
    "C:x",
    "C:\\Windows\\x",
    "c:/x",
    "sub/C:x",
    "a\x00b",
    "a\x01b\x1f/c\x7f",
    "\x1b[31mred",
    "line\nbreak",
    "a//b",
    "a/",
    "a/./b",
    "x" * 1024,
    "\u00e9" * 512,
    "d/" * 300 + "f",
]


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: repr(p[:24]))
def test_safe_entry_name_is_always_accepted_by_the_zip_writer(path):
    name = safe_entry_name(path)
    check_entry_name(name)
    components = name.split("/")
    assert ".." not in components and "." not in components
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in name)
    assert not re.match(r"[A-Za-z]:", name)


@pytest.mark.parametrize(
    "path", ["CT1/I10", "DICOMDIR", "S21610/S2010/I10", "report/test-SR.dcm", "a b/\u00fc.dcm", "x" * 1024, "100%/~1"]
)
def test_harmless_names_are_kept_verbatim(path):
    assert safe_entry_name(path) == path


def test_escaped_names_stay_recognisable():
    assert "x" in safe_entry_name("../x") and safe_entry_name("../x").endswith("/x")
    assert safe_entry_name("/abs/x") == "abs/x"
    assert safe_entry_name("a\\b") not in ("a\\b", "a/b")


@pytest.mark.parametrize(
    "paths",
    [
        ["a\\b", "a%5Cb"],
        ["..", "%2E%2E"],
        ["/x", "x"],
        ["a//b", "a/%/b"],
        ["\x01", "%01", "%01~2"],
        ["C:x", "C%3Ax", "C%3Ax~2", "C%3Ax~3"],
        ["", "/", "%"],
    ],
    ids=repr,
)
def test_names_that_collide_after_escaping_get_distinct_valid_names(paths):
    for perm in itertools.permutations(paths):
        names = entry_names(list(perm))
        assert len(set(names)) == len(paths), names
        assert all(is_valid_entry(n) for n in names), names
    # And the assignment does not depend on the listing order.
    assert len({tuple(entry_names(list(p))) for p in itertools.permutations(paths)}) == 1


@pytest.mark.parametrize("path", ["I10\udcff", "\udc80/x.dcm", "a/\ud800b"])
def test_safe_entry_name_handles_undecodable_file_names(path):
    assert is_valid_entry(safe_entry_name(path))


# --------------------------------------------------------------------------- properties

_PATH_CHARS = st.sampled_from(
    list("aA0159/._-~%:\\ ") + ["\x00", "\x01", "\x1f", "\x7f", "\u00e9", "\u0130", "\u00df", "\u0661"]
)
path_like = st.text(_PATH_CHARS, max_size=24)
any_path = st.one_of(st.text(max_size=40), path_like)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_path, unique=True, max_size=25).flatmap(lambda ps: st.tuples(st.just(ps), st.permutations(ps))))
def test_order_study_property(paths_and_permutation):
    paths, permuted = paths_and_permutation
    first = order_study(StudyObject(p, i) for i, p in enumerate(paths))
    second = order_study(StudyObject(p, 0) for p in permuted)
    # Same order and names whatever order the source listed the objects in.
    assert [(o.path, o.entry_name) for o in first] == [(o.path, o.entry_name) for o in second]
    # Nothing lost or duplicated; sizes travel with their path.
    assert sorted(o.path for o in first) == sorted(paths)
    assert all(o.size == paths.index(o.path) for o in first)
    names = [o.entry_name for o in first]
    assert len(set(names)) == len(names)
    for name in names:
        check_entry_name(name)
    # Every first-level folder's entries form one block.
    tops = [o.path.split("/")[0] for o in first]
    blocks = [k for k, _ in itertools.groupby(tops)]
    assert len(blocks) == len(set(blocks))


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.sampled_from("abcXYZ_-"), max_size=5),
    st.lists(st.integers(min_value=0, max_value=10**12), unique=True, min_size=1, max_size=20),
    st.text(st.sampled_from("abc."), max_size=4),
)
def test_numbers_compare_by_value_property(prefix, numbers, suffix):
    paths = [f"{prefix}{n}{suffix}" for n in numbers]
    assert ordered_paths(paths) == [f"{prefix}{n}{suffix}" for n in sorted(numbers)]
