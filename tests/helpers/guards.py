"""Hang guards: waits are on conditions (an object appears, a queue drains, a process exits),
bounded only so that a broken build fails instead of hanging. Never assertions about speed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

SAFETY_TIMEOUT = 180.0  # a hang guard, never an assertion about speed

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, *, timeout: float = SAFETY_TIMEOUT, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail (not hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(interval)


def communicate_or_fail(proc: subprocess.Popen[str], timeout: float, what: str) -> tuple[str, str]:
    """``proc.communicate()``, but a hang kills its whole process group and fails the test
    (``proc`` must be started with ``start_new_session=True``). A guard, not a speed limit."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what} did not finish (hang guard)")


def run_or_fail(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float, what: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd)`` with output captured, in a session of its own, under
    :func:`communicate_or_fail`'s hang guard."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out, err = communicate_or_fail(proc, timeout, what or " ".join(cmd[:3]))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
