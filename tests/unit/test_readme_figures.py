"""Every performance figure in README.md is one that BENCHMARKS.md (written by ``python -m bench``
and ``python -m bench.large``) prints: a number typed into the README that the bench does not
produce fails here.

Which text is checked:
- the whole of the README's performance sections, PERFORMANCE_SECTIONS (from the heading to the
  next heading of the same or a higher level);
- anywhere else in the README, every paragraph or list item that cites the benchmark
  (``make bench``, ``python -m bench`` or ``BENCHMARKS.md``).
Inline code (`...`) is left out: it holds names, not figures.

What a figure is (FIGURE): a number with a decimal point (``0.97``, ``1.598``); or any number
followed by a unit, `` x``/``x`` (times), ``%``, `` s``, ``ms``, ``MB``, ``GB``, ``MiB``, ``GiB``,
``dB`` or ``:1``; or after ``$`` (a price) or ``x`` (``x1.14``); a range ``a-b`` is two figures.
Whole numbers without a unit (``400 real CT slices``, ``issue 5``, ``3 rounds``) are counts, not
figures; sizes such as ``512x512`` are neither.

When it passes: BENCHMARKS.md prints the same number, with the same digits (thousands separators
aside): ``8.0`` does not pass for ``7.98``, nor ``212 MB`` for ``211.8 MB``. Which row it is in
is not checked; the README names the BENCHMARKS.md section each figure comes from, and every
section it names in quotes (``"Lambda model" in BENCHMARKS.md``) must be one.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"

PERFORMANCE_SECTIONS = ("## HTJ2K", "## Performance and choosing the memory size")
CITES_BENCH = re.compile(r"make bench|python -m bench|BENCHMARKS\.md")

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
FIGURE = re.compile(
    rf"""(?<![\w.,$-])
    (?:
        \$(?P<price>{_NUMBER})
      | x(?P<times>{_NUMBER})
      | (?P<first>{_NUMBER})(?:-(?P<second>{_NUMBER}))?(?:\ ?(?P<unit>x|%|s|ms|MB|GB|MiB|GiB|dB|:1))?
    )(?![\w.]\w|\w)""",
    re.VERBOSE,
)
# Every number BENCHMARKS.md prints; a dotted run with more than one dot is a UID, not a number.
_PRINTED = re.compile(r"(?<![\d.])\d+(?:\.\d+)*(?![\d])")
_CITED_SECTION = re.compile(r'"([^"\n]+)"\s+in\s+BENCHMARKS\.md')


def _plain(number: str) -> str:
    return number.replace(",", "")


def figures(text: str) -> list[str]:
    """The figures in ``text``, as written (ranges as their two ends), by the rules above."""
    text = re.sub(r"`[^`\n]*`", " ", text)
    found = []
    for m in FIGURE.finditer(text):
        if m["price"] or m["times"]:
            found.append(m["price"] or m["times"])
            continue
        numbers = [m["first"]] + ([m["second"]] if m["second"] else [])
        if m["unit"] or any("." in n for n in numbers):
            found += numbers
    return found


def printed_numbers(text: str) -> set[str]:
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    return {n for n in _PRINTED.findall(text) if n.count(".") <= 1}


def _sections(markdown: str) -> dict[str, str]:
    """Each heading line with its text up to the next heading of the same or a higher level."""
    lines = markdown.splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"(#+) ", line)
        if not m:
            continue
        level, body = len(m[1]), []
        for nxt in lines[i + 1 :]:
            h = re.match(r"(#+) ", nxt)
            if h and len(h[1]) <= level:
                break
            body.append(nxt)
        out[line.strip()] = "\n".join(body)
    return out


def _blocks(markdown: str) -> list[str]:
    """Paragraphs, list items and table rows."""
    blocks: list[list[str]] = []
    for line in markdown.splitlines():
        if not line.strip():
            blocks.append([])
        elif line.lstrip().startswith(("- ", "* ", "|", "#")) or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks if b]


def checked_text(readme: str) -> list[tuple[str, str]]:
    """(where, text) for every part of the README whose figures must come from BENCHMARKS.md."""
    sections = _sections(readme)
    parts = []
    for name in PERFORMANCE_SECTIONS:
        assert name in sections, f"README.md has no section {name!r}: update PERFORMANCE_SECTIONS"
        parts.append((name, sections[name]))
    rest = readme
    for name in PERFORMANCE_SECTIONS:
        rest = rest.replace(sections[name], "")
    parts += [("a paragraph citing the benchmark", b) for b in _blocks(rest) if CITES_BENCH.search(b)]
    return parts


def missing_figures(readme: str, benchmarks: str) -> list[tuple[str, str, str]]:
    """(where, figure, the paragraph) for every checked figure BENCHMARKS.md does not print."""
    printed = printed_numbers(benchmarks)
    return [
        (where, figure, " ".join(block.split()))
        for where, text in checked_text(readme)
        for block in _blocks(text)
        for figure in figures(block)
        if _plain(figure) not in printed
    ]


def test_every_performance_figure_in_the_readme_is_printed_by_the_bench():
    readme, benchmarks = README.read_text(), BENCHMARKS.read_text()
    missing = missing_figures(readme, benchmarks)
    assert not missing, (
        "README figures BENCHMARKS.md does not print (quote the bench's figure, add it to the bench's "
        "report, or drop it):\n" + "\n".join(f"{w}: {f!r} in {b[:160]!r}" for w, f, b in missing)
    )


def test_the_check_sees_the_performance_figures():
    """Not vacuous: the performance sections hold many figures, and one made up is caught."""
    readme, benchmarks = README.read_text(), BENCHMARKS.read_text()
    seen = [f for _, text in checked_text(readme) for f in figures(text)]
    assert len(seen) >= 40, seen
    # The Lambda model's speedup and its cheapest cost, as BENCHMARKS.md prints them, are among them.
    speedup = re.search(r"2-encoder speedup \(([\d.]+)x", benchmarks)
    cheapest = re.search(r"Cheapest: [\d,]+ MB, about ([\d.]+) s, \$([\d.]+)", benchmarks)
    assert speedup and cheapest
    assert {speedup.group(1), *cheapest.groups()} <= set(seen)
    typed = readme.replace(
        "## Performance and choosing the memory size\n",
        "## Performance and choosing the memory size\n\nNow 9.87x faster, 3.17 s.\n",
    )
    assert [f for _, f, _ in missing_figures(typed, benchmarks)] == ["9.87", "3.17"]


def test_figure_rules():
    text = (
        "0.97 and 0.96, met; 1.04x the time (x1.00), 186-193 MB, $0.184 per 1,000 studies, 222.3 s, "
        "5x faster, 100:1, 40 dB; not: 512x512, 64x64, x86_64, `.4.202`, 2-worker, 400 slices, issue 5, "
        "1.2.840.10008.1.2.4.91"
    )
    assert figures(text) == ["0.97", "0.96", "1.04", "1.00", "186", "193", "0.184", "222.3", "5", "100", "40"]
    assert figures("3,538 MB (2 workers) about 5.0 s") == ["3,538", "5.0"]
    assert printed_numbers("| 3,538 | 2.0 | 4,355,468 | 1.2.840.10008.1.2.4.91 | rate100 |") == {
        "3538",
        "2.0",
        "4355468",
        "100",
    }


def test_every_section_the_readme_cites_is_in_benchmarks():
    headings = [line[3:] for line in BENCHMARKS.read_text().splitlines() if line.startswith("## ")]
    cited = _CITED_SECTION.findall(README.read_text())
    assert cited, "the README names no BENCHMARKS.md section"
    unknown = [c for c in cited if not any(h.startswith(c) for h in headings)]
    assert not unknown, f"sections the README cites that BENCHMARKS.md has not: {unknown}; it has {headings}"
