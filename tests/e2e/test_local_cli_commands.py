"""The local stack as a user meets it: every command it prints, and the README's "From another
terminal" block, run as printed (only the README's port swapped for a free one) with the real AWS
CLI and the real shell, drop a study in and report on it; SIGTERM (systemd, ``docker stop``)
stops it all and frees the port, like Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

AWS = ROOT / ".venv-awscli" / "bin" / "aws"
BUCKET = "dicom-compression-local-data"
README_PORT = "4566"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_stack(port: int) -> Iterator[list[str]]:
    """``python -m devstack up`` until its banner is out; yields the banner's lines; stops it with
    SIGTERM and checks that nothing of it is left (server, poller, port)."""
    if not AWS.exists():
        pytest.fail(f"{AWS} not found: `make awscli-install` installs the real AWS CLI")
    stack = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = stack.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if "stops it" in line or not line:
                break
        yield lines
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            pytest.fail("SIGTERM did not stop the local stack within 20 s")
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(port), "the moto server outlived the stack and holds the port"
    leftover = subprocess.run(["pgrep", "-g", str(stack.pid)], capture_output=True, text=True).stdout.split()
    assert not leftover, f"processes of the stack still running: {leftover}"


def _shell_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: the real AWS CLI and the project's venv on PATH, no AWS settings of ours.
    ``tmp_path/.venv`` points at the project's venv so that ``.venv/bin/python`` works there."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{AWS.parent}:{os.environ['PATH']}"
    env["PYTHONPATH"] = str(ROOT)  # `python -m devstack` from the study's folder, as from a checkout
    return env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def _final_record(port: int, key: str, env: dict[str, str]) -> dict[str, object]:
    get = [str(AWS), "--endpoint-url", f"http://127.0.0.1:{port}", "s3", "cp", f"s3://{BUCKET}/{key}", "-"]
    creds = {
        **env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        got = subprocess.run(get, env=creds, capture_output=True, text=True)
        if got.returncode == 0 and json.loads(got.stdout).get("status") != "processing":
            return dict(json.loads(got.stdout))
        time.sleep(1)
    pytest.fail(f"no final record at {key}")


def test_every_printed_line_works_and_sigterm_stops_the_stack(fixture_study: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = _shell_env(tmp_path)
    subprocess.run(["cp", "-r", str(fixture_study), str(tmp_path / "my-study")], check=True)
    with running_stack(port) as banner:
        hint = next(line for line in banner if line.strip().startswith("(or: aws "))
        aws_line = hint.strip()[len("(or: ") : -1]
        assert shlex.split(aws_line)[0] == "aws"
        _run(aws_line, tmp_path, {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
        record = _final_record(port, "compressed/clinic-1/my-study.result.json", env)
        assert record["status"] == "succeeded", record
        assert record["totals"]["files"] == 11  # type: ignore[index]
        assert {i["path"] for i in record["ignored"]} == {"_READY"}  # type: ignore[attr-defined]

        # The printed `python -m devstack submit` line (two lines joined by its backslash), into
        # another study folder so that it is a study of its own.
        start = next(i for i, line in enumerate(banner) if line.strip().startswith("AWS_ENDPOINT_URL="))
        submit = (banner[start].rstrip().removesuffix("\\") + banner[start + 1]).strip()
        assert "python -m devstack submit ./my-study " in submit
        _run(submit.replace("/my-study/", "/printed-study/"), tmp_path, env)
        record = _final_record(port, "compressed/clinic-1/printed-study.result.json", env)
        assert record["status"] == "succeeded" and record["study"]["marker"] == "manifest.json", record  # type: ignore[index]


def _readme_block() -> list[str]:
    """The README's "From another terminal" commands, one per line."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("From another terminal:") :]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readmes_local_stack_commands_work_as_written(fixture_study: Path, tmp_path: Path) -> None:
    lines = _readme_block()
    assert lines[0].startswith("export AWS_ENDPOINT_URL=http://127.0.0.1:" + README_PORT)
    assert [line.split()[2:4] for line in lines[1:3]] == [["devstack", "submit"], ["devstack", "status"]]
    port = _free_port()
    env = _shell_env(tmp_path)
    subprocess.run(["cp", "-r", str(fixture_study), str(tmp_path / "my-study")], check=True)
    export, submit, *after = (line.replace(":" + README_PORT, f":{port}") for line in lines)
    with running_stack(port):
        _run(f"{export}\n{submit}", tmp_path, env)
        record = _final_record(port, "compressed/clinic-1/my-study.result.json", env)
        assert record["status"] == "succeeded" and record["metadata"] == {"order": "A-17"}, record
        outputs = [_run(f"{export}\n{line}", tmp_path, env).stdout for line in after]
    status = json.loads(outputs[0])
    assert status["state"] == "succeeded", status
    assert json.loads(outputs[1])["status"] == "succeeded"  # the AWS CLI line: the record itself
