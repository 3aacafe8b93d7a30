"""``python -m devstack presign`` and the README's curl loop, as an operator and a clinic use them.

What is refused is checked without AWS (signing needs credentials, not a server). The upload
runs through the local stack without IAM enforcement (moto's enforcement rejects presigned
URLs: tests/deploy/test_clinic_access.py enforces the clinic policy): presign in a subprocess,
then the README's ``curl`` loop verbatim in bash, then the real worker until the ZIP is there.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from devstack.presign import MAX_EXPIRES, PresignError, presign_study
from devstack.submit import file_entry, study_files
from tests.helpers.guards import run_or_fail
from tests.helpers.paths import ROOT
from tests.helpers.studies import SMALL_STUDY, natural_order

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

README = ROOT / "README.md"
LOOP_MARKER = "<!-- presign-curl-loop"
HANG_GUARD_SECONDS = 120  # a guard against hangs, never an assertion about speed
VISIBILITY_TIMEOUT = 10  # the local stack's (tests/conftest.py ``stack``)
#: The small corpus study under names a URL must encode (space, non-ASCII), one nested.
NAMES = {
    "MR 1/IM1": "MR1/IM1",
    "MR 1/IM2": "MR1/IM2",
    "MR 1/IM10": "MR1/IM10",
    "Zürich/IM1": "MR9/IM1",
    "Zürich/deep/IM1": "MR10/IM1",
}


def readme_loop() -> str:
    """The bash block right after the README's marker comment, as written."""
    text = README.read_text()
    start = text.index(LOOP_MARKER)
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match and match.start() - text.index("\n", start) < 5, "the marker must sit right above the block"
    return match.group(1)


def make_study(corpus: Path, dest: Path) -> Path:
    for name, source in NAMES.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / SMALL_STUDY[source], target)
    return dest


def rows(urls: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in urls.read_text(encoding="utf-8").splitlines()]  # type: ignore[misc]


# ------------------------------------------------------------------ refused when made
@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "SOURCE_PREFIX":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def study(corpus: Path, tmp_path: Path) -> Path:
    return make_study(corpus, tmp_path / "study")


@pytest.mark.parametrize("expires", [0, -1, MAX_EXPIRES + 1, 30 * 24 * 3600])
def test_expiry_outside_s3s_range_is_refused(signing_env: None, study: Path, tmp_path: Path, expires: int) -> None:
    with pytest.raises(PresignError, match="--expires"):
        presign_study(
            "s3://b/incoming/clinic-7/s1/", study, clinic="clinic-7", expires=expires, out_dir=tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "url, clinic, why",
    [
        ("s3://b/incoming/clinic-8/s1/", "clinic-7", "outside the folder of clinic"),
        ("s3://b/incoming/clinic-70/s1/", "clinic-7", "outside the folder of clinic"),
        ("s3://b/compressed/clinic-7/s1/", "clinic-7", "under the source prefix"),
        ("s3://b/clinic-7/s1/", "clinic-7", "under the source prefix"),
        ("s3://b/incoming/clinic-7/", "clinic-7", "not the clinic's folder"),
        ("s3://b/incoming/", "clinic-7", "outside the folder of clinic"),
        ("s3://b/incoming/clinic-7/../clinic-8/s1/", "clinic-7", "'..'"),
        ("s3://b/incoming/clinic-7//s1/", "clinic-7", "empty"),
        ("s3://b/incoming/a/b/s1/", "a/b", "without '/'"),
        ("s3://b/incoming/s1/", "", "non-empty"),
        ("s3://b/incoming/../s1/", "..", "without '/'"),
    ],
)
def test_destination_outside_the_clinics_folder_is_refused(
    signing_env: None, study: Path, tmp_path: Path, url: str, clinic: str, why: str
) -> None:
    with pytest.raises(PresignError, match=re.escape(why)):
        presign_study(url, study, clinic=clinic, expires=3600, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_source_prefix_follows_the_workers_configuration(
    signing_env: None, study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_PREFIX", "uploads")
    with pytest.raises(PresignError, match="'uploads/'"):
        presign_study("s3://b/incoming/clinic-7/s1/", study, clinic="clinic-7", expires=60, out_dir=tmp_path / "a")
    made = presign_study("s3://b/uploads/clinic-7/s1/", study, clinic="clinic-7", expires=60, out_dir=tmp_path / "b")
    assert made.prefix == "uploads/clinic-7/s1/"


def test_output_inside_the_study_and_untabulable_names_are_refused(
    signing_env: None, study: Path, tmp_path: Path
) -> None:
    with pytest.raises(PresignError, match="outside the study folder"):
        presign_study("s3://b/incoming/clinic-7/s1/", study, clinic="clinic-7", expires=60, out_dir=study / "urls")
    (study / "tab\there").write_bytes(b"x")
    with pytest.raises(PresignError, match="tab or line break"):
        presign_study("s3://b/incoming/clinic-7/s1/", study, clinic="clinic-7", expires=60, out_dir=tmp_path / "out")


def test_urls_for_every_file_then_the_manifest(signing_env: None, study: Path, tmp_path: Path) -> None:
    (study / "manifest.json").write_text("{}")  # a local marker is never part of the study
    out = tmp_path / "out"
    made = presign_study(
        "s3://b/incoming/clinic-7/s1/",
        study,
        clinic="clinic-7",
        expires=MAX_EXPIRES,
        out_dir=out,
        options={"mode": "lossless", "metadata": {"order": "A-17"}},
    )
    listed = rows(made.urls)
    files = study_files(study)
    assert [path for path, _ in listed] == [str(p) for p in files] + [str(out / "manifest.json")]
    keys = [f"incoming/clinic-7/s1/{p.relative_to(study).as_posix()}" for p in files] + [
        "incoming/clinic-7/s1/manifest.json"
    ]
    for (_, url), key in zip(listed, keys, strict=True):
        parsed = urlparse(url)
        assert unquote(parsed.path) == f"/b/{key}"
        query = parse_qs(parsed.query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # SigV4: the signature with a 7-day expiry
        assert query["X-Amz-Expires"] == [str(MAX_EXPIRES)]
        assert query["X-Amz-SignedHeaders"] == ["host"]
    # The manifest is submit's: the same entries (shared code) and the options.
    manifest = json.loads(made.manifest.read_text())
    assert manifest == {
        "mode": "lossless",
        "metadata": {"order": "A-17"},
        "files": [file_entry(study, p, p.read_bytes()) for p in files],
    }
    assert made.files == len(NAMES) and (made.urls.stat().st_mode & 0o777) == 0o600
    assert made.temporary_credentials is False
    # What it prints names no file (file names may carry patient names).
    summary = "\n".join(made.summary_lines())
    assert not any(part in summary for name in NAMES for part in name.split("/"))


# ------------------------------------------------------------------ through the local stack
def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_or_fail(cmd, cwd=cwd, env=env, timeout=HANG_GUARD_SECONDS)


def presign_and_upload(
    stack: Any, workdir: Path, study_path: str, *, tamper: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``presign`` as a subprocess in ``workdir``, then the README's loop in bash there."""
    assert shutil.which("curl") and shutil.which("bash"), "curl and bash are needed (make tools installs curl)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    url = f"s3://{stack.bucket}/incoming/{study_path}/"
    made = run(
        [
            sys.executable,
            "-m",
            "devstack",
            "presign",
            url,
            "./study",
            "--clinic",
            study_path.split("/")[0],
            "--expires",
            "600",
            "--lossless",
        ],
        workdir,
        env,
    )
    assert made.returncode == 0, made.stderr
    assert "presigned 5 files + manifest.json" in made.stdout
    if tamper is not None:  # one URL that fails: a bucket that does not exist
        urls = workdir / "presigned" / "urls.tsv"
        lines = urls.read_text(encoding="utf-8").splitlines(keepends=True)
        lines[tamper] = lines[tamper].replace(f"/{stack.bucket}/", "/no-such-bucket/")
        urls.write_text("".join(lines), encoding="utf-8")
    return run(["bash", "-c", readme_loop()], workdir, env)


def work_until(stack: Any, record_key: str) -> dict[str, Any]:
    """The real handler on the real worker loop, until the study's record is final."""
    from devstack.poller import poll_once
    from handlers import worker
    from pipeline.aws import client

    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        poll_once(stack.queue_url, worker.handler, wait_seconds=1, retry_delay=1)
        try:
            record = json.loads(client("s3").get_object(Bucket=stack.bucket, Key=record_key)["Body"].read())
        except client("s3").exceptions.NoSuchKey:
            continue
        if record["status"] != "processing":
            return record
    pytest.fail(f"no final record at {record_key}")


def test_presigned_study_runs_like_any_other(stack: Any, corpus: Path, tmp_path: Path) -> None:
    from pipeline.aws import client

    make_study(corpus, tmp_path / "study")
    loop = presign_and_upload(stack, tmp_path, "clinic-7/study 1")
    assert loop.returncode == 0, loop.stderr
    assert loop.stdout == ""  # --silent: no progress, nothing about the files

    record = work_until(stack, "compressed/clinic-7/study 1.result.json")
    assert record["status"] == "succeeded", record.get("error")
    assert record["settings"]["mode"] == "lossless"  # the manifest's options reached the worker
    assert record["study"]["prefix"] == "incoming/clinic-7/study 1/"
    assert record["study"]["marker"] == "manifest.json"
    zipped = client("s3").get_object(Bucket=stack.bucket, Key="compressed/clinic-7/study 1.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == natural_order(list(NAMES))


def test_a_failed_upload_stops_the_loop_before_the_manifest(stack: Any, corpus: Path, tmp_path: Path) -> None:
    from pipeline.aws import client

    make_study(corpus, tmp_path / "study")
    loop = presign_and_upload(stack, tmp_path, "clinic-7/study 2", tamper=1)
    assert loop.returncode == 1
    listed = client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="incoming/clinic-7/study 2/").get("Contents", [])
    uploaded = [o["Key"].rsplit("/study 2/", 1)[1] for o in listed]
    first = rows(tmp_path / "presigned" / "urls.tsv")[0][0].split("study/", 1)[1]
    assert uploaded == [first]  # the file before the failed one; nothing after it, no manifest
