"""Real worker processes for the tests: ``python -m devstack poll`` with its output kept in files,
the process tree read from /proc, and the structured log lines a worker printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.helpers.paths import ROOT


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, from /proc; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pid:
                out.append(int(entry.name))
    return out


class WorkerProcess:
    """``python -m devstack poll QUEUE_URL`` as its own process, output kept in files."""

    def __init__(self, stack: Any, workdir: Path, name: str, **extra_env: str) -> None:
        self.stack = stack
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.env = {**os.environ, **stack.env(), **extra_env}
        self.env["PYTHONPATH"] = str(ROOT)
        self.proc: subprocess.Popen[bytes] | None = None
        self.known_children: set[int] = set()

    def start(self) -> WorkerProcess:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:  # the child keeps its copies
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devstack", "poll", self.stack.queue_url],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        found = children_of(self.pid)
        self.known_children.update(found)
        return found

    def kill(self) -> None:
        """SIGKILL the worker process itself (not its children: what they do next is under test)."""
        assert self.proc is not None
        self.children()
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Ctrl-C (the worker loop's way out), then make sure nothing it started is left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.children()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for pid in self.known_children:  # only processes this worker forked
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def logs(self) -> list[dict[str, Any]]:
        """The structured JSON log lines (powertools) the worker printed."""
        out = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict) and "message" in doc:
                    out.append(doc)
        return out

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


def messages(logs: Iterable[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [line for line in logs if str(line.get("message", "")).startswith(text)]
