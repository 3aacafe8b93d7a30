"""RELIABILITY.md from the facts the reliability tests recorded.

Usage: ``python -m scripts.reliability_report [FACTS] [OUT]`` (defaults ``.reliability/facts.json``
and ``RELIABILITY.md``); ``make reliability`` runs ``tests/reliability`` with the recorder on
(``RELIABILITY_FACTS``, tests/helpers/facts.py), then this.

Every figure comes from the facts file, and every fact there was recorded through the assertion
that checks it. The text around the figures (what each section tries, the history of the bugs
found, what is not covered) is this file's. A fact the report needs that the run did not record
fails the rendering (MissingFact), and so does a fact recorded that the report does not show,
a test that did not pass, or a figure that varies from run to run put into the text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACTS = ROOT / ".reliability" / "facts.json"
DEFAULT_OUT = ROOT / "RELIABILITY.md"
SCHEMA = 1
SYMBOLS = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}


class RenderError(Exception):
    """The facts cannot make a true report (a test failed, a fact is left over or misused)."""


class MissingFact(RenderError, KeyError):
    """A figure the report shows was not recorded by this run."""

    def __str__(self) -> str:
        return f"fact {self.args[0]!r} is not in the facts file: did its test run (and pass)? Nothing is printed in its place."


# --------------------------------------------------------------------------- formatting


def code(text: str) -> str:
    shown = repr(text)[1:-1] if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) else text
    return "`" + shown.replace("|", "\\|") + "`"


def fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,g}"
    elif isinstance(value, str):
        text = code(value)
    elif isinstance(value, list):
        text = ", ".join(fmt(v) for v in value) or "none"
    else:
        raise RenderError(f"cannot print {value!r}")
    return f"{text} {unit}" if unit else text


def _of(fact: dict[str, Any]) -> str:
    value, of = fact["value"], fact.get("of")
    if of is None:
        return fmt(value, fact["unit"])
    share = f" ({100 * value / of:.0f} %)" if of else ""
    return f"{fmt(value, fact['unit'])} of {fmt(of)}{share}"


def claim(fact: dict[str, Any]) -> str:
    """What the test asserts of the figure."""
    op, bound, unit = fact["op"], fact["bound"], fact["unit"]
    if op == "setup":
        return "the test's input"
    if op == "==":
        return "exact"
    if op == "within":
        return f"{fmt(bound[0])} ≤ n < {fmt(bound[1])}" + (f" {unit}" if unit else "")
    if op == "contains":
        return f"contains {code(bound)}"
    return f"{SYMBOLS[op]} {fmt(bound, unit)}"


# --------------------------------------------------------------------------- the facts


class Facts:
    """The facts file, read strictly: every fact used is checked off; a missing one raises."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc.get("schema") != SCHEMA:
            raise RenderError(f"facts schema {doc.get('schema')!r}, this renderer reads {SCHEMA}")
        self.run: dict[str, Any] = doc["run"]
        self.tests: dict[str, dict[str, Any]] = doc["tests"]
        self.facts: dict[str, dict[str, Any]] = doc["facts"]
        self.used: set[str] = set()

    def fact(self, key: str) -> dict[str, Any]:
        if key not in self.facts:
            raise MissingFact(key)
        self.used.add(key)
        return self.facts[key]

    def value(self, key: str) -> Any:
        """The value, for a total or a list of cases; a figure that varies cannot be one."""
        fact = self.fact(key)
        if fact["varies"]:
            raise RenderError(f"fact {key!r} varies from run to run: it cannot go into the text or a total")
        return fact["value"]

    def fig(self, key: str) -> str:
        """The figure, for the text (stable figures only)."""
        self.value(key)
        return _of(self.fact(key))

    def claim(self, key: str) -> str:
        return claim(self.fact(key))

    def total(self, keys: Iterable[str]) -> int:
        return sum(int(self.value(k)) for k in keys)

    def row(self, label: str, key: str) -> str:
        """``| measured | figure | asserted | varies: this run |``"""
        fact = self.fact(key)
        if fact["varies"]:
            return f"| {label} | varies | {claim(fact)} | {_of(fact)} |"
        return f"| {label} | {_of(fact)} | {claim(fact)} | |"


TABLE_HEAD = [
    "| measured | figure | asserted by the test | varies: this run's value |",
    "|---|---:|---|---:|",
]


def table(f: Facts, rows: Iterable[tuple[str, str]]) -> list[str]:
    return [*TABLE_HEAD, *(f.row(label, key) for label, key in rows), ""]


def tests_of(f: Facts, file: str) -> list[str]:
    ids = [t for t in f.tests if t.startswith(f"tests/reliability/{file}::")]
    if not ids:
        raise RenderError(f"no test of tests/reliability/{file} in the facts file")
    return ids


def tests_line(f: Facts, file: str) -> list[str]:
    names = sorted({t.split("::", 1)[1].split("[", 1)[0] for t in tests_of(f, file)})
    return [f"Tests: `tests/reliability/{file}`: " + ", ".join(f"`{n}`" for n in names) + ".", ""]


# --------------------------------------------------------------------------- sections


def header(f: Facts) -> list[str]:
    run = f.run
    changes = " plus uncommitted changes" if run["uncommitted_changes"] else ""
    fuzz = (
        f"`FUZZ_EXAMPLES={run['fuzz_examples']}` (a long run: random examples)"
        if run.get("fuzz_examples")
        else "CI-sized and derandomized (the same examples every run)"
    )
    return [
        "# Reliability: duplicates, faults and hostile input",
        "",
        "<!-- Generated by `make reliability` (scripts/reliability_report.py from .reliability/facts.json): do not edit",
        "     by hand; the text is in scripts/reliability_report.py, the figures come from the tests. -->",
        "",
        "What happens when a study is triggered many times, when workers die, when time runs out, when",
        "S3 fails, and when the input is hostile, shown by tests on real parts: a real moto server",
        "(`devstack.stack.RunningStack`: its resources created from the packaged CloudFormation template when",
        "there is one, from `devstack/resources.py` otherwise), the real handler driven by the real `poll_once`",
        "or the real `python -m devstack poll` process, and real DICOM from the corpus (`../shared/dicom-corpus`).",
        "No timing assertions: tests wait on conditions (an object appears, a queue drains) with a generous",
        "hang guard.",
        "",
        "```sh",
        "make reliability                                  # runs tests/reliability with the recorder on, rewrites this file",
        ".venv/bin/python -m pytest tests/reliability      # the same tests, nothing recorded (or: -m reliability)",
        'scripts/fuzz_long.sh                              # the long fuzzing run (see "Fuzzing")',
        "```",
        "",
        f"This report is one run: {run['date']} (UTC), commit `{run['commit']}`{changes}, Python {run['python']},",
        f"hypothesis {run['hypothesis']}; fuzzing {fuzz}. Every figure in it is one the tests recorded through",
        "the assertion that checks it (tests/helpers/facts.py), read from `.reliability/facts.json`:",
        "",
        "- **figure**: what this run measured; **asserted**: what the test asserts of it: *exact* (the test",
        "  fails on any other value: a count fixed by the test's construction, or following deterministically",
        "  from the corpus and the code), a bound, or *the test's input* (a size or count the test chose);",
        "- figures that vary from run to run (memory, polls, counts that depend on the machine's speed) are in",
        "  the last column only, with the bound the test asserts; timings are in the last section, marked as timings.",
        "",
    ]


STUDY_OBJECTS = [
    ("duplicates", ["duplicates.reference.objects", "duplicates.five.objects", "duplicates.race.objects"]),
    ("killed workers", ["kill.encoding.objects", "kill.uploading.objects"]),
    ("S3 faults", ["s3_faults.clean.objects", "s3_faults.transient.objects"]),
    ("poison batch", ["poison.batch.objects"]),
    ("hostile names", ["hostile.names.objects"]),
    ("broken files", ["hostile.corrupt.objects"]),
    ("non-UTF-8 name", ["hostile.non_utf8.objects"]),
    ("tiny files", ["hostile.tiny.objects"]),
    ("whole corpus", ["phi.objects"]),
]
CHECKED_AGAINST_SOURCE = [
    ("hostile names", ["hostile.names.objects"]),
    ("broken files", ["hostile.corrupt.objects"]),
    ("tiny files", ["hostile.tiny.byte_identical"]),
    ("mutated files", ["fuzz.process_file_lossless.cases", "fuzz.process_file_lossy.cases"]),
]
CHECKED_AGAINST_REFERENCE = [
    ("duplicates", ["duplicates.five.objects"]),
    ("killed workers", ["kill.encoding.objects", "kill.uploading.objects"]),
    ("S3 faults", ["s3_faults.transient.objects"]),
]
FAILING_STUDIES = [
    ("time limit", ["timeout.short.failure_events", "timeout.mid.failure_events"]),
    ("AccessDenied", ["s3_faults.denied.failure_events"]),
    ("manifests", ["hostile.manifest-50mb.failure_events", "hostile.manifest-deep.failure_events"]),
    ("outputFilename", None),  # one per case, below
]
FUZZ = [
    "parse_body",
    "parse_body_bytes",
    "parse_manifest",
    "parse_manifest_bytes",
    "entry_names",
    "process_file_lossless",
    "process_file_lossy",
]
BUGS = 8  # the rows of the history table below


def _breakdown(f: Facts, groups: list[tuple[str, list[str]]]) -> tuple[int, str]:
    parts = [(label, f.total(keys)) for label, keys in groups]
    return sum(n for _, n in parts), ", ".join(f"{n:,} {label}" for label, n in parts)


def _outname_events(f: Facts) -> list[str]:
    return [f"hostile.outname.{case}.failure_events" for case in f.value("hostile.outname.cases")]


def totals(f: Facts) -> list[str]:
    passed = sum(t["outcome"] == "passed" for t in f.tests.values())
    objects, objects_parts = _breakdown(f, STUDY_OBJECTS)
    source, source_parts = _breakdown(f, CHECKED_AGAINST_SOURCE)
    reference, reference_parts = _breakdown(f, CHECKED_AGAINST_REFERENCE)
    failing = [(label, keys if keys is not None else _outname_events(f)) for label, keys in FAILING_STUDIES]
    failed, failed_parts = _breakdown(f, failing)
    transient = [f"s3_faults.transient.injected.{op}" for op in S3_OPS]
    injected = sum(f.fact(k)["value"] for k in transient)
    fuzz_cases = f.total(f"fuzz.{p}.cases" for p in FUZZ)
    return [
        "## Totals",
        "",
        "| | this run | varies: this run's value |",
        "|---|---|---:|",
        f"| tests in `tests/reliability` | {passed:,} passed, of {len(f.tests):,} | |",
        f"| objects through complete studies | {objects:,} ({objects_parts}) | |",
        "| **objects lost** | **none**: each of those studies' tests asserts the record's file count (or the ZIP's entry "
        "list) equals the objects submitted, and the tests of section 6 that every object has its row and one ZIP entry, "
        "in order | |",
        f"| objects compared one by one with their source by the test | {source:,} ({source_parts}): kept ones "
        "byte-identical, re-encoded ones decoding to exactly the source's pixels (lossless) or decoding (lossy) | |",
        f"| objects in a ZIP byte-identical to a clean run's (whose output the pipeline verified) | {reference:,} "
        f"({reference_parts}) | |",
        f"| studies that must fail | {failed:,} ({failed_parts}): each failed with a record and one "
        "`Study Compression Failed`, no ZIP, no open upload, no lock, no message left | |",
        "| S3 faults injected | the race's 503 SlowDown "
        f"{f.fig('duplicates.race.faults_injected')}, AccessDenied {f.fig('s3_faults.denied.gets_of_the_object')}; "
        "transient 503/500 on every third call: at least one per faulted operation, all absorbed in the first "
        f"invocation | transient: {injected:,} |",
        f"| identifying header values found in what the worker says | {f.fig('phi.values_found')} of "
        f"{f.fig('phi.values')} values from {f.fig('phi.files_with_values')} corpus files | characters scanned: "
        f"{f.fact('phi.characters')['value']:,} |",
        f"| fuzzing cases | {fuzz_cases:,} (section 7) | |",
        f"| bugs found by these tests | {BUGS}, all fixed (history, below) | |",
        "",
    ]


def bugs(f: Facts) -> list[str]:
    return [
        "## Bugs found, and the fixes (history)",
        "",
        "Found while these tests were written; each fix is small and keeps the behaviour the README",
        "describes. They were committed by the maintainers' session together with their own work (commits",
        "`0ed6f83`, `946eb33`, `f9c7601`); the code has moved since, and the places named are today's.",
        "",
        "| # | found by | what happened | fix |",
        "|---|---|---|---|",
        "| 1 | `test_kill.py` | A worker SIGKILLed mid-study left its encoder processes running for ever: each was "
        "blocked in `recv()` on its pipe, whose other end stayed open in the encoders forked after it (fork copies "
        "every descriptor). | A forked encoder closes the parent's ends of its own and earlier pipes, so the parent's "
        "death is an EOF; a failed send ends the encoder too (`pipeline/files/encoders.py`: `_serve`, `_Encoder`, "
        "`_Pool`). |",
        "| 2 | `test_duplicates.py::test_worker_that_loses_the_race_after_its_duplicate_check_stays_silent` | A worker "
        "that checked for a final record (none yet), then got the lock after another worker had finished and released "
        'it, compressed the study again, overwrote the final record with a "processing" one, and announced a second '
        "`Study Compressed`. | The duplicate / OutputExists decision (`_finished_already`, `pipeline/job/run.py`) is "
        "made again in `_compress` once the lock is held. |",
        "| 3 | `test_timeout.py` (a 5 MiB kept file followed by CT slices) | The encoder pool hung for ever: the parent "
        "blocked sending a job larger than the pipe buffer while the encoder blocked sending back a result larger than "
        "the pipe buffer. | Found at the same time by the maintainers, fixed by them: jobs go through a feeder thread per "
        "encoder (`_Encoder._send_loop`, `pipeline/files/encoders.py`). |",
        "| 4 | `test_poison.py::…[250kb-s3-event-key-too-long]` | An S3 event whose key is longer than S3 allows became "
        "a trigger; `HeadObject` failed (414), the message was retried until the DLQ with tracebacks (the failure "
        "record could not be written at such a key either). | `_parse_record` (`pipeline/trigger/events.py`) drops a "
        'key longer than S3\'s limit: "key longer than S3 allows". |',
        "| 5 | `test_hostile.py::test_non_utf8_local_file_name` | A local study with a file name that is not UTF-8 "
        "(`os.walk` gives lone surrogates) failed as a whole: `UnsafeEntryName`, and the record could not have been "
        "written either. | `_text_path` in `LocalStudySource.list` (`pipeline/study/source.py`) percent-escapes such "
        "bytes (`latin1-%E9t%E9.dcm`), the file itself is read from its real path; the maintainers also escape "
        "surrogates in `safe_entry_name` (`pipeline/study/listing.py`). |",
        "| 6 | `test_phi.py` (the whole corpus as one study, in some runs only) | The encoder pool waited on no "
        "connection at all (`wait([])`: for ever) when the results it had just handed out had filled its window. | "
        "`_Pool.run` (`pipeline/files/encoders.py`): with nothing in flight it refills instead of waiting. Regression "
        "test: `test_encoder_pool.py` (section 9). |",
        "| 7 | `test_fuzz.py` (CI size) | `process_file` raised `ValueError` for a file whose Transfer Syntax UID is not "
        "a transfer syntax (one bit flipped in (0002,0010)); in the pipeline the encoder process died on it. | Kept "
        'as-is, "malformed DICOM: its Transfer Syntax UID is not a known transfer syntax" (`decide`, '
        "`pipeline/files/decide.py`). |",
        "| 8 | `scripts/fuzz_long.sh` (`FUZZ_EXAMPLES=5000`) | `process_file` raised `NotImplementedError` for a "
        "big-endian file with an unknown VR (`'HS'`, `'ES'`: one bit flipped in a VR). | The big-endian checks and "
        "conversion are inside a `try` (`_to_little_endian`, `pipeline/files/process.py`); such a file is kept, "
        '"malformed DICOM: an element could not be read: …". |',
        "",
        "Before fixes 7 and 8 no file was lost either (a dead encoder's file is kept as-is with a",
        "warning), but the reason was wrong, an encoder was restarted, and with in-process encoding",
        f"(`workers=0`) the whole study would have failed. The {f.fig('fuzz.found_regressions')} inputs that showed them are",
        "explicit examples of both `process_file` properties in `test_fuzz.py` (`FOUND`), run every time.",
        "",
    ]


def duplicates(f: Facts) -> list[str]:
    return [
        "## 1. Duplicates and races",
        "",
        f"A study of {f.fig('duplicates.slices')} real CT slices ({f.fig('duplicates.study_bytes')}), default lossy "
        "settings, is first compressed once elsewhere in the bucket (one trigger, one worker): the reference.",
        "",
        f"**Triggered {f.fig('duplicates.five.triggers')} times** (`test_five_triggers_two_workers_one_output`): "
        "`_READY` and `manifest.json` both (two messages on the queue at once, two `python -m devstack poll` processes "
        "started together), then `_READY` uploaded again, that very notification body sent to the queue once more, and "
        "its first delivery received without being deleted and made visible again (visibility 0: a redelivery), "
        "handled by two new worker processes. Asserted besides the figures: the ZIP is byte-identical to the "
        "reference's (sha256) and the record's `files` equal; the duplicates wrote nothing (record and ZIP ETags "
        "unchanged); no multipart upload, no `.lock`, study queue and DLQ empty. Whether the two workers of the race "
        "meet on the lock depends on timing: the test prints it but does not assert it, so it is not reported.",
        "",
        "**The worst interleaving, made deterministic in-process** "
        "(`test_worker_that_loses_the_race_after_its_duplicate_check_stays_silent`): worker B has found no final "
        "record; its lock PUT is answered 503 SlowDown (retried by botocore); meanwhile worker A takes the lock, "
        "finishes the study, releases the lock. Before fix 2, B compressed again and sent a second event; now B "
        "sees A's record once it holds the lock and stays silent: the record is A's, one event, the lock gone.",
        "",
        *table(
            f,
            [
                ("reference run: objects in its record", "duplicates.reference.objects"),
                ("worker processes (two, then two more)", "duplicates.five.worker_processes"),
                ('deliveries that compressed the study (log "study compressed")', "duplicates.five.compressed"),
                ('deliveries that found it done (log "duplicate trigger")', "duplicates.five.duplicate_triggers"),
                ("keys under `compressed/dup/` (the ZIP and the record)", "duplicates.five.output_keys"),
                ("objects in the record", "duplicates.five.objects"),
                ("`Study Compressed` events for the input fingerprint", "duplicates.five.events"),
                ("interleaving: objects in the study", "duplicates.race.slices"),
                ("interleaving: 503 answers to B's lock PUT", "duplicates.race.faults_injected"),
                ("interleaving: objects in A's record (B left it unchanged)", "duplicates.race.objects"),
                ("interleaving: `Study Compressed` events", "duplicates.race.events"),
            ],
        ),
        *tests_line(f, "test_duplicates.py"),
    ]


def _kill_rows(case: str) -> list[tuple[str, str]]:
    rows = [
        ("encoder processes of the killed worker, at the kill", f"kill.{case}.encoders_at_kill"),
        ("of those, still running after it died (checked in `/proc`)", f"kill.{case}.encoders_left_running"),
        ("objects at the ZIP key right after the kill", f"kill.{case}.objects_at_zip_key_after_kill"),
    ]
    if case == "encoding":
        rows.append(('files done in the "processing" record at the kill', "kill.encoding.files_done_at_kill"))
    else:
        rows += [
            ("multipart uploads left open by the killed worker", "kill.uploading.uploads_open_after_kill"),
            ("of those, aborted by the successor before its own", "kill.uploading.uploads_aborted_by_successor"),
        ]
    return [
        *rows,
        ("successor: objects in the final record", f"kill.{case}.objects"),
        ("successor: objects re-encoded", f"kill.{case}.compressed"),
        ("`Study Compressed` events", f"kill.{case}.events"),
        ("`head_object` calls on the ZIP key, start to finish", f"kill.{case}.head_polls"),
        ("answers showing anything but the final object's size", f"kill.{case}.head_hits_not_final"),
        ("distinct ETags seen at the key", f"kill.{case}.etags_seen"),
    ]


def kill(f: Facts) -> list[str]:
    return [
        "## 2. A worker killed mid-study",
        "",
        "The worker is a `python -m devstack poll` subprocess with "
        f"`LOCK_STALE_SECONDS={f.value('kill.lock_stale_seconds')}`, `WORKERS={f.value('kill.encoders')}`, study queue "
        f"visibility timeout {f.fig('kill.visibility_timeout')}; the study is {f.fig('kill.slices')} real CT slices "
        f"({f.fig('kill.study_bytes')}) in lossless mode, so the ZIP is a multipart upload of {f.fig('kill.zip_parts')} "
        "parts and the run takes several seconds. A thread keeps calling `head_object` on the ZIP key from start to "
        "finish. The worker is SIGKILLed",
        "",
        '- (a) **while encoding** (`test_worker_killed_while_encoding`): once the "processing" record exists and both '
        f"encoder processes have spent {f.fig('kill.encoder_cpu_at_kill')} each (the record's progress is refreshed "
        "only every few seconds, too coarse to catch this moment);",
        "- (b) **while uploading** (`test_worker_killed_while_uploading`): as soon as a multipart upload exists for the "
        "ZIP key.",
        "",
        "Once the killed worker's lock is stale, a new worker is started, gets the message back (after the visibility "
        "timeout) and finishes. Asserted besides the figures: its ZIP is byte-identical to a clean run's "
        "(`local_reference`, the local-folder API) and the record's `files` equal; no open upload, no lock, no message "
        "left, nothing on the DLQ.",
        "",
        "(a) killed while encoding:",
        "",
        *table(f, _kill_rows("encoding")),
        "(b) killed while uploading:",
        "",
        *table(f, _kill_rows("uploading")),
        "The successor is started only once the killed worker's lock is older than `LOCK_STALE_SECONDS`: on AWS the",
        "study queue's visibility timeout (6 x the function timeout, `serverless.yml`) is far longer than the lock's",
        "staleness (`LOCK_STALE_SECONDS`, 300 s by default, `pipeline/job/config.py`), so a redelivered message always",
        "finds a stale lock. With this test's shortened timings, a successor started at once could spend the",
        'message\'s receives on "another worker is compressing" and send it to the DLQ.',
        "",
        *tests_line(f, "test_kill.py"),
    ]


def timeout(f: Facts) -> list[str]:
    return [
        "## 3. Lambda's time limit",
        "",
        "In-process (the real handler on the moto server) with a Lambda context whose "
        "`get_remaining_time_in_millis` is a fake clock; the pipeline stops a study once less than its safety margin "
        f"({f.fig('timeout.safety_margin_ms')}, `pipeline/job/deadline.py`) is left.",
        "",
        f"**Too little time from the start** (`test_too_little_time_fails_before_any_encoding`): "
        f"{f.fig('timeout.short.ms_left')} left for {f.fig('timeout.short.slices')} CT slices, less than the margin "
        f"alone (asserted: {f.claim('timeout.short.ms_left')}). The study fails before any encoding with a record `failed`, `StudyTooLarge`, and one "
        "`Study Compression Failed`; the message is deleted, not retried.",
        "",
        *table(
            f,
            [
                ("error message (its start)", "timeout.short.message"),
                ("`Study Compression Failed` events", "timeout.short.failure_events"),
                ("calls of `compress_study`", "timeout.short.compress_study_calls"),
                ("lock PUTs", "timeout.short.lock_puts"),
                ("multipart calls (create, upload part)", "timeout.short.multipart_calls"),
            ],
        ),
        f"**Time running out mid-study** (`test_time_running_out_mid_study_aborts_the_upload`): "
        f"{f.fig('timeout.mid.ms_left')} left, {f.fig('timeout.mid.tick_ms')} less at every look, for "
        f"{f.fig('timeout.mid.blobs')} incompressible {f.fig('timeout.mid.blob_mib')} files first in ZIP order and "
        f"{f.fig('timeout.mid.slices')} CT slices: enough for the estimate before the run, then time runs out when the "
        "ZIP is already a multipart upload. The same clean failure; the upload aborted, never completed; nothing at "
        "the ZIP key, the lock released, no upload left. (Before the maintainers' feeder-thread fix, bug 3, this study "
        "hung the pool.)",
        "",
        *table(
            f,
            [
                ("error message (its start; it ends with the files done)", "timeout.mid.message"),
                ('files done "when time ran out"', "timeout.mid.files_done"),
                ("`Study Compression Failed` events", "timeout.mid.failure_events"),
                ("multipart uploads created", "timeout.mid.uploads_created"),
                ("`AbortMultipartUpload` calls", "timeout.mid.abort_calls"),
                ("`CompleteMultipartUpload` calls", "timeout.mid.complete_calls"),
                ("PUTs of the ZIP as one object", "timeout.mid.zip_puts"),
            ],
        ),
        *tests_line(f, "test_timeout.py"),
    ]


S3_OPS = ["GetObject", "PutObject", "UploadPart", "CompleteMultipartUpload"]


def s3_faults(f: Facts) -> list[str]:
    return [
        "## 4. S3 faults",
        "",
        'Faults are botocore `before-send` hooks on the worker\'s own client (`pipeline.aws.client("s3")`, '
        "in-process, driven by `poll_once`) that answer with a real S3 XML error instead of sending the request. "
        f"Study: {f.fig('s3_faults.slices')} CT slices and {f.fig('s3_faults.blobs')} incompressible "
        f"{f.fig('s3_faults.blob_mib')} files: a ZIP of {f.fig('s3_faults.zip_parts')} parts; first compressed "
        f"cleanly elsewhere ({f.fig('s3_faults.clean.objects')} objects).",
        "",
        "**Transient faults** (`test_transient_faults_on_every_third_call_change_nothing`): 503 SlowDown and 500 "
        "InternalError, alternating, on the 1st, 4th, 7th… call of each of GetObject, PutObject, UploadPart and "
        "CompleteMultipartUpload (asserted: exactly every third call faulted). How many calls there are varies with "
        'the heartbeat (a "processing" record every few seconds). Asserted besides the figures: the ZIP is '
        "byte-identical to the clean run's, the record's `files` equal, no open upload, only the ZIP and the record "
        "under the output prefix, queue and DLQ empty.",
        "",
        *table(
            f,
            [
                *((f"{op}: faults injected, of the calls", f"s3_faults.transient.injected.{op}") for op in S3_OPS),
                ("handler invocations (every fault absorbed within the first)", "s3_faults.transient.invocations"),
                ("objects in the record", "s3_faults.transient.objects"),
                ("`Study Compressed` events", "s3_faults.transient.events"),
            ],
        ),
        "**A permanent 403 AccessDenied** on one source object (`test_permanent_access_denied_fails_once_naming_the_"
        "object`): no retry storm; record `failed`, one `Study Compression Failed`, message deleted (not redelivered, "
        "not on the DLQ), no ZIP, no lock, no open upload.",
        "",
        *table(
            f,
            [
                ("error code", "s3_faults.denied.error_code"),
                ("error message: names the object", "s3_faults.denied.message_names_object"),
                ("error message: names the error", "s3_faults.denied.message_names_error"),
                ("GETs of the forbidden object", "s3_faults.denied.gets_of_the_object"),
                ("handler invocations", "s3_faults.denied.invocations"),
                ("`Study Compression Failed` events", "s3_faults.denied.failure_events"),
            ],
        ),
        *tests_line(f, "test_s3_faults.py"),
    ]


POISON_BODIES = {
    "not-json": "text that is not JSON",
    "empty-body": "an empty body",
    "json-not-an-s3-event": '`{"hello": "world"}`',
    "json-array": "a JSON array of numbers",
    "json-nested-100000-deep": "`[` repeated, then as many `]`",
    "another-bucket": "an S3 event for another bucket",
    "key-outside-source-prefix": "an S3 event for `compressed/…/_READY`",
    "250kb-text": "plain text",
    "250kb-s3-event-key-too-long": "an S3 event whose key is longer than S3 allows (bug 4)",
    "300kb-body": "a JSON body larger than SQS allows",
}


def poison(f: Facts) -> list[str]:
    lines = [
        "## 5. Poison messages",
        "",
        "Each body alone on the real queue through `poll_once` (`test_poison_alone_is_logged_and_dropped[…]`): the "
        "batch never fails (`batchItemFailures: []`), the message is deleted, nothing is redelivered or written, the "
        "DLQ stays empty, and the drop is logged with its reason.",
        "",
        "| body (test id) | what | bytes | handler invocations | drop reason logged | asserted |",
        "|---|---|---:|---:|---|---|",
    ]
    for name in f.value("poison.bodies"):
        if name not in POISON_BODIES:
            raise RenderError(f"poison body {name!r} has no description in scripts/reliability_report.py")
        base = f"poison.alone.{name}"
        lines.append(
            f"| `{name}` | {POISON_BODIES[name]} | {f.fig(base + '.body_bytes')} | {f.fig(base + '.invocations')} | "
            f"{f.fig(base + '.reason')} | starts with it; invocations exact |"
        )
    return [
        *lines,
        "",
        f"Then {f.fig('poison.batch.poison_messages')} of them with a good trigger in one Lambda-shaped batch "
        "(`test_poison_in_a_batch_with_a_good_message`): the good study is compressed (ZIP, record, one event).",
        "",
        *table(
            f,
            [
                ("failures reported for the batch", "poison.batch.failures_reported"),
                ("drops logged, each with its reason", "poison.batch.drops_logged"),
                ("objects of the good study in its ZIP, in order", "poison.batch.objects"),
            ],
        ),
        *tests_line(f, "test_poison.py"),
    ]


def hostile(f: Facts) -> list[str]:
    outnames = [
        f"| `{case}` | {f.fig(f'hostile.outname.{case}.name')} | {f.fig(f'hostile.outname.{case}.message')} "
        f"({f.claim(f'hostile.outname.{case}.message')}) | {f.fig(f'hostile.outname.{case}.output_keys_written')} | "
        f"{f.fig(f'hostile.outname.{case}.failure_events')} |"
        for case in f.value("hostile.outname.cases")
    ]
    return [
        "## 6. Hostile input",
        "",
        "Through S3 unless said otherwise; studies in lossless mode so that every re-encoded image can be",
        "compared exactly with its source: every object has one row and one ZIP entry (record order = ZIP order),",
        "each kept one byte-for-byte with a reason, each re-encoded one `bit-exact` and decoding (pydicom,",
        'independently) to exactly its source\'s `pixel_array`; never "encoder process died".',
        "",
        "**Hostile names** (`test_hostile_names_and_empty_files`): keys with `..` segments (`a/../b.dcm`, "
        "`../escape.dcm`), `./dot.dcm`, absolute-looking (`/etc/passwd`, `//server/share/abs.dcm`), backslash and drive "
        "names (`C:\\Windows\\evil.dcm`, `..\\..\\up.dcm`, `C:relative.dcm`), control characters, a tab, a name colliding "
        "with an escaped one (`../collide.txt` vs `%2E%2E/collide.txt`), a non-empty `trailing/` object, zero-byte "
        "files, a non-ASCII path and a key near S3's limit (four long folders). Each name that could escape has a "
        "different `zipEntry` in the record (asserted for each), all pass `check_entry_name`, all unique; the "
        "extractors extract exactly those names, inside the target folder, nothing outside it.",
        "",
        *table(
            f,
            [
                ("objects", "hostile.names.objects"),
                ("the longest key", "hostile.names.longest_key_bytes"),
                ("under another name in the ZIP (escaped, or renamed on a collision)", "hostile.names.renamed_in_zip"),
                ("re-encoded (the CT slices under hostile names), each compared", "hostile.names.compressed"),
                ("kept (the small MR slices, the non-DICOM and empty files)", "hostile.names.kept"),
                ('zero-byte files kept, "empty file"', "hostile.names.empty_kept"),
                ("extractors run on the ZIP (those installed; `make tools` installs both)", "hostile.names.extractors"),
            ],
        ),
        "**A local file name that is not UTF-8** (`test_non_utf8_local_file_name`; local-folder API, `python -m "
        "pipeline compress`): kept under a percent-escaped name (bug 5: the whole study failed before).",
        "",
        *table(
            f,
            [("objects", "hostile.non_utf8.objects"), ("the escaped name", "hostile.non_utf8.name")],
        ),
        "**Many tiny files in one study** (`test_ten_thousand_tiny_files_local_folder_api`; local-folder API, "
        "`python -m pipeline compress --lossless --workers 2` in a subprocess, to keep time down): all in the ZIP in "
        "natural order (`IM1`, `IM2` … `IM10000`); no ZIP64 record or extra field (neither is needed at this size).",
        "",
        *table(
            f,
            [
                ("files", "hostile.tiny.files"),
                ("objects in the record", "hostile.tiny.objects"),
                ("entries byte-identical to their file", "hostile.tiny.byte_identical"),
                ("ZIP64 records", "hostile.tiny.zip64_records"),
                ("entries with an extra field", "hostile.tiny.extra_fields"),
                ("peak RSS of the process", "hostile.tiny.peak_rss_mib"),
                ("peak RSS of its encoder processes", "hostile.tiny.encoders_peak_rss_mib"),
            ],
        ),
        "**A header claiming far more pixel data than the file holds** "
        "(`test_header_claiming_65535x65535x1000_frames_is_kept_in_bounded_memory`; a real CT slice edited at test "
        "time, through `process_file` in a fresh interpreter, lossless and lossy): kept byte-for-byte with a warning, "
        "in bounded memory. Also in the broken-files study below, through S3.",
        "",
        *table(
            f,
            [
                ("modes in which it is kept byte-for-byte, with a warning", "hostile.huge.kept_byte_identical"),
                ("the reason", "hostile.huge.reason"),
                ("peak RSS growth while processing it", "hostile.huge.rss_growth_mib"),
            ],
        ),
        "**Broken files, one study** (`test_truncated_and_corrupt_files_are_kept_or_verified`): the corpus' "
        f"non-conformant files ({f.fig('hostile.corrupt.nonconformant')}), the huge-header file "
        f"({f.fig('hostile.corrupt.huge')}), truncations of a real CT slice ({f.fig('hostile.corrupt.truncated')}, "
        f"from the first byte to the last but one), seeded bit flips ({f.fig('hostile.corrupt.flipped')}, half in the "
        f"header) and seeded insertions ({f.fig('hostile.corrupt.inserted')}). The split is the pipeline's decision on "
        "each: the same on every run, asserted exactly.",
        "",
        *table(
            f,
            [
                ("objects", "hostile.corrupt.objects"),
                ("re-encoded, each bit-exact to its source", "hostile.corrupt.compressed"),
                ("kept byte-for-byte, each with a reason", "hostile.corrupt.kept"),
                ("study status (one `Study Compressed`)", "hostile.corrupt.status"),
            ],
        ),
        "**Manifests** (`test_oversized_and_deep_manifests_fail_with_the_reason`): an oversized `manifest.json` "
        "(valid JSON) and a deeply nested one: each study `failed`, `InvalidManifest`, with the reason; no ZIP; the "
        "oversized one refused on its size, never downloaded.",
        "",
        *table(
            f,
            [
                ("oversized: the reason", "hostile.manifest-50mb.message"),
                ("oversized: GETs of it", "hostile.manifest-50mb.gets"),
                ("oversized: `Study Compression Failed` events", "hostile.manifest-50mb.failure_events"),
                ("nested: the reason", "hostile.manifest-deep.message"),
                ("nested: `Study Compression Failed` events", "hostile.manifest-deep.failure_events"),
            ],
        ),
        "**`outputFilename` that would leave the target prefix** "
        "(`test_output_filename_cannot_leave_the_target_prefix[…]`): `failed`, `InvalidManifest`, with the reason; "
        "the only new key is the failure record at the study's default record key; no ZIP anywhere, no upload.",
        "",
        "| test id | `outputFilename` (the test's input) | reason (asserted) | new keys besides the study | "
        "`Study Compression Failed` events |",
        "|---|---|---|---:|---:|",
        *outnames,
        "",
        "The counts are exact.",
        "",
        *tests_line(f, "test_hostile.py"),
    ]


FUZZ_PROPERTIES = [
    (
        "parse_body",
        "`parse_body` never raises; every trigger is for our bucket, inside the source prefix, a marker, without "
        "empty/`.`/`..` segments, a key S3 could hold (bodies: text, any JSON, S3 events with fields dropped or "
        "replaced by any JSON value, SNS-wrapped, test events)",
    ),
    ("parse_body_bytes", "`parse_body` on arbitrary bytes: never raises"),
    (
        "parse_manifest",
        "`parse_manifest` raises nothing but `ManifestError`; an accepted manifest keeps the output inside the target "
        "prefix (checked through `output_keys`) and lists only safe relative paths (structured documents with every "
        "field of any type)",
    ),
    ("parse_manifest_bytes", "the same on raw and truncated bytes"),
    (
        "entry_names",
        "`order_study` + `safe_entry_name`: every entry name passes `check_entry_name`, names are unique, the order "
        "does not depend on the listing order, `ZipStreamWriter` accepts them all and `zipfile` reads them back",
    ),
    (
        "process_file_lossless",
        "`process_file`, lossless, on the seed corpus files with a few edits (truncation, bit flip, inserted or "
        "overwritten bytes at any offset): never raises; kept = byte-identical; re-encoded = a Part 10 file whose "
        "pixels decode and equal the input's `pixel_array` exactly",
    ),
    ("process_file_lossy", "the same, lossy: re-encoded ones decode, to the input's shape"),
]


def fuzzing(f: Facts) -> list[str]:
    rows = []
    for name, what in FUZZ_PROPERTIES:
        cases = f.fact(f"fuzz.{name}.cases")
        led = []
        if name == "parse_body":
            led.append(f"triggers: {f.fig('fuzz.parse_body.triggers')}, asserted {f.claim('fuzz.parse_body.triggers')}")
        if name.startswith("parse_manifest"):
            key = f"fuzz.{name}.accepted"
            led.append(f"accepted: {f.fig(key)}, asserted {f.claim(key)}")
        if name.startswith("process_file"):
            key = f"fuzz.{name}"
            led += [
                f"re-encoded and compared: {f.fig(key + '.compressed')}, asserted {f.claim(key + '.compressed')} "
                f"(compared: {f.fig(key + '.compared')}, exact)",
                f"kept: {f.fig(key + '.kept')}",
            ]
        rows.append(f"| {what} | {f.fig(f'fuzz.{name}.cases')} ({claim(cases)}) | {'; '.join(led) or '-'} |")
    regressions = f.fig("fuzz.found_regressions")
    return [
        "## 7. Fuzzing",
        "",
        "`tests/reliability/test_fuzz.py` (hypothesis, `deadline=None`). Each property is run by a plain test that "
        "counts the cases it really ran and asserts the count: its `max_examples`, plus, for the `process_file` "
        f"properties, the {regressions} `FOUND` regression examples. Derandomized unless `FUZZ_EXAMPLES` is set: the "
        "same examples on every run (hypothesis seeds each property from its source, and draws some values from "
        "constants in the code loaded, so running one file alone gives other cases than the whole folder). "
        "The `process_file` seeds are real corpus files (small MR and CT, big endian, implicit VR, deflated, RGB, "
        f"multi-frame, a full-size CT slice: {f.fig('fuzz.seed_files')}), each of which compresses unmutated "
        "(`test_unmutated_seeds_compress[…]`, one test each). Most mutated files are kept (not Part 10, truncated, "
        f"malformed, unreadable): at least {f.fig('fuzz.min_recompressed_percent')} must still be re-encoded, so that "
        "the compress path is fuzzed too.",
        "",
        "| property | cases | what they led to |",
        "|---|---:|---|",
        *rows,
        "",
        "Long runs: `scripts/fuzz_long.sh` sets `FUZZ_EXAMPLES` (default 20,000 per property; e.g.",
        "`FUZZ_EXAMPLES=100000 scripts/fuzz_long.sh -k process_file`): random examples, failing ones kept in",
        "`.hypothesis/` and replayed first by the next long run. `make reliability FUZZ_EXAMPLES=…` makes this",
        "report of such a run. Its results are not kept here: a figure here is always this run's.",
        "",
        *tests_line(f, "test_fuzz.py"),
    ]


def phi(f: Facts) -> list[str]:
    return [
        "## 8. No patient data leaves",
        "",
        f"`test_no_identifying_header_value_in_anything_the_worker_says`: a copy of the whole corpus "
        f"({f.fig('phi.objects')} files: CT, MR, multi-frame, DICOMDIR trees, SR/RT, non-conformant and non-DICOM files) "
        "submitted as one study through the S3 pipeline (`submit_study`: files, then `manifest.json`), default lossy "
        "settings, with `LOG_LEVEL=DEBUG`.",
        "",
        f"Captured, in {f.fig('phi.channels')} channels: stdout and stderr at the file-descriptor level (`capfd`: the "
        "structured JSON logs, the EMF metrics, anything the forked encoders write), every Python logging record "
        "emitted (the pipeline's logger at DEBUG, other loggers at the level the process would emit), every event on "
        'the notification queue, the final record, and every JSON object the worker PUT to S3 (the "processing" '
        "records, the final record, the lock).",
        "",
        f"Looked for: the values of {f.fig('phi.keywords')} keywords (PatientName, PatientID, PatientBirthDate, "
        "OtherPatientIDs, OtherPatientNames, PatientAddress, ReferringPhysicianName, InstitutionName, AccessionNumber, "
        "StudyID, PatientMotherBirthName, PerformingPhysicianName, OperatorsName) at any depth of each input dataset "
        "(DICOMDIR records too). Texts: case-insensitive substring; digit-only values: whole token.",
        "",
        "Not looked for, and why:",
        "",
        "- empty values, values shorter than 4 characters or made only of `^`, spaces and zeros;",
        "- values that appear in a path of the study (the record lists every path on purpose);",
        "- **UIDs are excluded**: the record lists the old and new SOP Instance UIDs of re-encoded files",
        "  on purpose; UID-shaped strings are removed from the outputs before searching;",
        "- identifiers the system makes up (UUID request ids, hex strings of 32+ characters: the ZIP's",
        "  sha256, input fingerprints, ETags) are removed too: an early version flagged PatientID `AA01`",
        "  inside a random request id (`…-5aa01ec9f9b3`), a false positive;",
        "- digit-only values are not looked for in JSON numbers (sizes, counts, ratios are measurements,",
        "  never header values): an early version flagged PatientID `1234` as a `pixelBytesOut` of 1234.",
        "",
        "The checker checks itself first (it finds `doe^peter` inside a reason and `19800707` as a token,",
        "and nothing in a UID or a request id). The ZIP itself is not checked: it carries the DICOM files,",
        "headers included, on purpose.",
        "",
        *table(
            f,
            [
                ("corpus files in the study (all in the record)", "phi.objects"),
                ("distinct identifying values looked for", "phi.values"),
                ("corpus files they come from", "phi.files_with_values"),
                ("JSON objects the worker PUT (lock, records)", "phi.json_writes"),
                ("characters of output searched", "phi.characters"),
                ("values found", "phi.values_found"),
            ],
        ),
        *tests_line(f, "test_phi.py"),
    ]


def encoder_pool(f: Facts) -> list[str]:
    return [
        "## 9. The encoder pool",
        "",
        "`test_pool_returns_every_job_in_order_without_stalling`: the real `process_files` (forked encoders, pipes, "
        f"feeder threads) over {f.fig('encoder_pool.runs')} runs of {f.fig('encoder_pool.jobs_per_run')} jobs of "
        "random sizes whose encode time is drawn at random (seeded), so results come back in many orders. A wait on no "
        "connection (which can only block for ever, bug 6) is reported at once. Against the code before fix 6 it "
        "failed in most runs (timing-dependent).",
        "",
        *table(
            f,
            [
                ("runs with every job back, once, in order, byte-identical", "encoder_pool.runs_in_order"),
                ("waits on no connection", "encoder_pool.stalls"),
            ],
        ),
        *tests_line(f, "test_encoder_pool.py"),
    ]


def not_covered(f: Facts) -> list[str]:
    return [
        "## Not covered",
        "",
        "- **Output keys longer than S3 allows.** A study folder path near S3's key limit makes",
        "  `compressed/<path>.result.json` longer than the limit. moto does not enforce it, so this is",
        "  not run; on AWS the worker would retry (the error is not transient but unclassified), then the",
        "  message would go to the DLQ without a failure event (the failure record cannot be written there either).",
        "- **botocore giving up** (`pipeline/aws.py`: 8 attempts, standard mode) and SQS redelivery taking over:",
        "  not run, each case would spend long in backoff. The redelivery path itself (message back after",
        "  the visibility timeout, the earlier attempt's upload aborted) is what section 2 shows.",
        "- **Which worker loses the race** in `test_five_triggers_two_workers_one_output` depends on",
        "  timing, and whether they met on the lock is not asserted; the deterministic interleaving is the",
        "  second duplicates test.",
        '- **Much faster hardware.** `test_kill.py` kills "while encoding" once both encoders have spent',
        '  some CPU time, and "while uploading" once the multipart upload exists; on much faster hardware the',
        '  study could finish first: the test then fails saying so ("the study finished before the kill',
        '  point"), it does not pass vacuously.',
        f"- **Sound triggers from the fuzzer.** Few generated bodies are a trigger: {f.fig('fuzz.parse_body.triggers')}"
        " bodies, so the checks on a trigger's fields ran that often; the drop paths are what it mostly fuzzes.",
        "",
    ]


def timings(f: Facts) -> list[str]:
    lines = [
        "## Tests and timings",
        "",
        "Every test of this run, its outcome, and its time (setup and teardown included: the first test of a file also "
        "starts that file's moto server). **Timings** vary from run to run (the machine is shared): the session took "
        f"{f.run['seconds']:,.0f} s wall time.",
        "",
        "| test | outcome | seconds (timing) |",
        "|---|---|---:|",
    ]
    for nodeid, test in f.tests.items():
        lines.append(f"| `{nodeid.removeprefix('tests/reliability/')}` | {test['outcome']} | {test['seconds']:.1f} |")
    return [*lines, ""]


SECTIONS = [
    header,
    totals,
    bugs,
    duplicates,
    kill,
    timeout,
    s3_faults,
    poison,
    hostile,
    fuzzing,
    phi,
    encoder_pool,
    not_covered,
    timings,
]


def render(doc: dict[str, Any]) -> str:
    """The report; raises RenderError (MissingFact among them) when it cannot be a true one."""
    f = Facts(doc)
    red = {t: v["outcome"] for t, v in f.tests.items() if v["outcome"] != "passed"}
    if red or f.run.get("exit_status", 0) != 0:
        raise RenderError(f"not a green run (exit status {f.run.get('exit_status')}): {red}")
    lines = [line for section in SECTIONS for line in section(f)]
    unused = sorted(set(f.facts) - f.used)
    if unused:
        raise RenderError(f"facts recorded but not in the report (add them to scripts/reliability_report.py): {unused}")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    facts = Path(argv[0]) if argv else DEFAULT_FACTS
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    try:
        report = render(json.loads(facts.read_text()))
    except RenderError as exc:
        print(f"{facts}: {exc}", file=sys.stderr)
        return 1
    out.write_text(report)
    print(f"wrote {out} from {facts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
