"""No patient data leaves: the whole corpus through the S3 pipeline, at LOG_LEVEL=DEBUG.

Everything the worker says is captured: stdout/stderr at the file-descriptor level (the
structured JSON logs, EMF metrics, anything the forked encoder processes print), every Python
logging record emitted (the pipeline's logger at DEBUG, the others at the level the process
would emit them), every event on the notification queue, and every JSON object the worker
wrote to S3 (the "processing" records, the final record, the lock). The identifying header
values of every input file must appear in none of it.

What is checked, and why some values are not:

- PatientName, PatientID, PatientBirthDate, OtherPatientIDs, OtherPatientNames, PatientAddress,
  ReferringPhysicianName, InstitutionName, AccessionNumber, StudyID, PatientMotherBirthName,
  PerformingPhysicianName, OperatorsName, at any depth of the dataset (DICOMDIR records too);
- skipped: empty values, values shorter than 4 characters or made only of ``^``, spaces and
  zeros, and values that appear in a path of the study (the record lists every path on purpose);
- texts: case-insensitive substring; digit-only values: as a whole token;
- UIDs are excluded: the record lists the old and new SOP Instance UIDs of re-encoded files on
  purpose, so UID-shaped strings are removed from the outputs before searching; so are the
  identifiers the system makes up (UUID request ids, hex digests of 32+ characters: the ZIP's
  sha256, the input fingerprint, ETags), in which a short ID turns up by chance.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from devstack.submit import submit_study
from pipeline.aws import client
from tests.helpers.aws import drop_pending, get_record, run_until_idle
from tests.helpers.events import EventLog
from tests.helpers.facts import Facts
from tests.helpers.s3_faults import S3Faults, request_key

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

VISIBILITY_TIMEOUT = 60
KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "ReferringPhysicianName",
    "InstitutionName",
    "AccessionNumber",
    "StudyID",
    "PatientMotherBirthName",
    "PerformingPhysicianName",
    "OperatorsName",
)
#: What the corpus (../shared/dicom-corpus, MANIFEST.csv) holds: its files, the identifying values
#: of those keywords in them and how many files carry one. A new corpus changes them: update here.
CORPUS_FILES, CORPUS_VALUES, FILES_WITH_VALUES = 436, 119, 396
UID_SHAPED = re.compile(r"(?<![0-9A-Za-z.])\d+(?:\.\d+){2,}(?![0-9A-Za-z])")
#: Identifiers the system makes up (request ids, sha256 digests, fingerprints, ETags): random or
#: derived hex, in which a short ID like "AA01" turns up by chance ("...5aa01ec9..." did once).
MADE_UP = re.compile(
    r"(?i)(?<![0-9a-z])(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,})(?![0-9a-z])"
)


def identifying_values(root: Path) -> dict[str, set[str]]:
    """value -> the files it comes from, for every file under ``root`` that pydicom can parse."""
    paths = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    all_paths = "\n".join(paths).lower()
    found: dict[str, set[str]] = {}
    for rel in paths:
        try:
            ds = pydicom.dcmread(root / rel, stop_before_pixels=True, force=True)
            elements = list(ds.iterall())
        except Exception:  # noqa: BLE001, S112 - not DICOM (or too broken to hold any value)
            continue
        for elem in elements:
            if elem.keyword not in KEYWORDS or elem.value is None:
                continue
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            for value in values:
                text = str(value).strip()
                if len(text) < 4 or set(text) <= set("^ 0") or text.lower() in all_paths:
                    continue
                found.setdefault(text, set()).add(rel)
    return found


def texts(doc: Any) -> Iterator[str]:
    """The text in a JSON document: keys and string values. Numbers (sizes, counts, ratios) and
    flags are measurements, never header values, so a digit-only value is not looked for there."""
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield str(key)
            yield from texts(value)
    elif isinstance(doc, (list, tuple)):
        for value in doc:
            yield from texts(value)


def channel(raw: list[Any]) -> tuple[str, str]:
    """(everything, its text only) for a list of outputs: JSON documents, JSON lines or plain text."""
    docs: list[Any] = []
    for item in raw:
        if isinstance(item, str):  # captured output: JSON lines (logs, metrics) or plain text
            for line in item.splitlines():
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    docs.append(line)
        else:
            docs.append(item)
    everything = "\n".join(d if isinstance(d, str) else json.dumps(d, ensure_ascii=False, default=str) for d in docs)
    return everything, "\n".join(t for d in docs for t in texts(d))


def leaks(values: dict[str, set[str]], said: tuple[str, str]) -> dict[str, str]:
    """The values found in one output channel (UIDs and made-up hex identifiers removed first), with context.
    Texts: case-insensitive substring of everything; digit-only values: whole token of the text."""
    everything, text = (MADE_UP.sub(" ", UID_SHAPED.sub(" ", part)) for part in said)
    lower = everything.lower()
    out = {}
    for value in values:
        if value.isdigit():
            m = re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", text)
            where, at = text, (m.start() if m else -1)
        else:
            where, at = everything, lower.find(value.lower())
        if at >= 0:
            out[value] = where[max(0, at - 80) : at + len(value) + 80]
    return out


class JsonWrites:
    """Every JSON-ish object the worker PUTs (records, lock): what S3 would hold over time."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.bodies: list[tuple[str, str]] = []

    def __call__(self, operation: str, request: Any) -> None:
        key = request_key(request, self.bucket)
        if key.endswith((".json", ".lock")):
            body = request.body
            data = body if isinstance(body, (bytes, bytearray)) else (body.read() if hasattr(body, "read") else b"")
            if hasattr(body, "seek"):
                body.seek(0)
            self.bodies.append((key, bytes(data).decode("utf-8", "replace")))


def test_no_identifying_header_value_in_anything_the_worker_says(
    stack: Any,
    corpus: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    facts: Facts,
) -> None:
    from handlers.worker import handler
    from pipeline.observability import logger

    study = shutil.copytree(corpus, tmp_path / "corpus")
    values = identifying_values(study)
    facts.setup("phi.keywords", len(KEYWORDS))
    facts.equal("phi.values", len(values), CORPUS_VALUES)
    facts.equal("phi.files_with_values", len({f for fs in values.values() for f in fs}), FILES_WITH_VALUES)
    assert {"Citizen^Jan", "Doe^Peter", "QMNx85rKkkg", "19800707"} <= set(values)

    # LOG_LEVEL=DEBUG for the pipeline's logger; every stream it writes to is captured.
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    saved_level = logger.log_level
    logger.setLevel("DEBUG")  # LOG_LEVEL is read when the logger is created (at import)
    for h in logger.handlers:
        if hasattr(h, "stream"):
            monkeypatch.setattr(h, "stream", sys.stdout)  # capfd's stdout (the handler kept import time's)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    sqs = client("sqs")
    drop_pending(sqs, stack.queue_url)
    events = EventLog(sqs, stack.notification_queue_url)
    prefix = "incoming/phi/whole-corpus/"
    try:
        submitted = submit_study(study, f"s3://{stack.bucket}/{prefix}")
        writes = JsonWrites(stack.bucket)
        with S3Faults(client("s3"), ["PutObject"], writes):
            run_until_idle(stack.queue_url, handler)
    finally:
        logger.setLevel(saved_level)

    record = get_record(client("s3"), stack.bucket, "compressed/phi/whole-corpus.result.json")
    assert record is not None and record["status"] in ("succeeded", "succeeded_with_warnings"), record
    assert record["totals"]["files"] == submitted["files"]
    facts.equal("phi.objects", record["totals"]["files"], CORPUS_FILES)
    out, err = capfd.readouterr()
    assert "study compressed" in out and '"DEBUG"' not in err  # the logs really are captured here
    assert '"_aws"' in out  # ... and the EMF metrics
    said = {
        "stdout": channel([out]),
        "stderr": channel([err]),
        "logging records": channel(
            [
                {
                    "level": r.levelname,
                    "logger": r.name,
                    "message": r.getMessage(),
                    **{k: v for k, v in r.__dict__.items() if k not in ("msg", "args", "exc_info")},
                    "exception": logging.Formatter().formatException(r.exc_info) if r.exc_info else None,
                }
                for r in caplog.records
            ]
        ),
        "events": channel(events.for_prefix(prefix)),
        "final record": channel([record]),
        "records and lock as written": channel([json.loads(body) for _, body in writes.bodies]),
    }
    assert any('"processing"' in body for _, body in writes.bodies)
    # At least the lock, a "processing" record and the final record; more heartbeats on a slow run.
    facts.bound("phi.json_writes", len(writes.bodies), ">=", 3, varies=True)
    facts.setup("phi.channels", len(said))
    # Timestamps, durations and heartbeats make the length vary a little from run to run.
    facts.bound("phi.characters", sum(len(everything) for everything, _ in said.values()), ">", 100_000, varies=True)
    print(
        f"\nlooked for {len(values)} identifying values from {len({f for fs in values.values() for f in fs})} files "
        f"in {sum(len(everything) for everything, _ in said.values()):,} characters of output "
        f"({len(caplog.records)} log records, {len(writes.bodies)} JSON writes)"
    )
    # The detector itself finds what it must (a name inside text, a digit-only ID as a token) ...
    assert set(leaks(values, channel(['{"m": "reason: quoted doe^peter"}', "id=19800707;"]))) == {
        "Doe^Peter",
        "19800707",
    }
    assert (
        leaks(
            values,
            channel(
                [{"bytes": 19800707, "uid": "1.2.19800707.3", "requestId": "844ac1f7-3b64-4fac-94a8-5aa01ec9f9b3"}]
            ),
        )
        == {}
    )
    found = {channel: leaks(values, text) for channel, text in said.items()}
    found = {channel: hits for channel, hits in found.items() if hits}
    facts.equal("phi.values_found", sum(len(hits) for hits in found.values()), 0)
    assert found == {}, json.dumps(
        {
            channel: {v: {"files": sorted(values[v])[:3], "context": ctx} for v, ctx in hits.items()}
            for channel, hits in found.items()
        },
        indent=1,
        ensure_ascii=False,
    )
