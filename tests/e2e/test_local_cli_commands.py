"""The local stack as a user meets it: the command it prints, pasted into the real AWS CLI, drops
a study in; SIGTERM (systemd, ``docker stop``) stops it all and frees the port, like Ctrl-C."""

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
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

AWS = ROOT / ".venv-awscli" / "bin" / "aws"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_printed_aws_cli_line_works_and_sigterm_stops_the_stack(fixture_study: Path, tmp_path: Path) -> None:
    if not AWS.exists():
        pytest.fail(f"{AWS} not found: `make awscli-install` installs the real AWS CLI")
    port = _free_port()
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
        hint = next(line for line in lines if line.strip().startswith("(or: aws "))
        command = hint.strip()[len("(or: ") : -1]
        study = tmp_path / "my-study"
        subprocess.run(["cp", "-r", str(fixture_study), str(study)], check=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": f"{AWS.parent}:{os.environ['PATH']}",
        }
        env.pop("AWS_ENDPOINT_URL", None)  # the printed line names the endpoint itself
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        bucket = re.search(r"s3://([^/]+)/", command).group(1)  # type: ignore[union-attr]
        record_key = "compressed/clinic-1/my-study.result.json"
        get = [str(AWS), "--endpoint-url", f"http://127.0.0.1:{port}", "s3", "cp", f"s3://{bucket}/{record_key}", "-"]
        record = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = subprocess.run(get, env=env, capture_output=True, text=True)
            if got.returncode == 0 and json.loads(got.stdout).get("status") != "processing":
                record = json.loads(got.stdout)
                break
            time.sleep(1)
        assert record is not None and record["status"] == "succeeded", record
        assert record["totals"]["files"] == 11
        assert {i["path"] for i in record["ignored"]} == {"_READY"}
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
    assert shlex.split(command)[0] == "aws"
