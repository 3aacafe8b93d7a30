"""A stand-in for the Lambda Python 3.12 runtime, for running code FROM the unzipped artifact.

Lambda puts the function's code (/var/task) first on sys.path and provides boto3 with its
pure-Python dependencies (/var/runtime). Here: a CPython 3.12 started with ``-I -S`` (no
site-packages, no PYTHON* variables, no script directory), with sys.path extended by exactly
[the unzipped artifact, a folder holding only the runtime-provided packages].
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path

# Pure-Python packages the Lambda runtime provides (boto3 and its dependencies); taken from
# this venv so that the isolated interpreter sees what Lambda would, and nothing more.
RUNTIME_PROVIDED_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def host_arch() -> str | None:
    """The artifact architecture this machine's CPU runs (None: neither)."""
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())


#: Where :func:`python312` looks, in order (said in the test report's header when none is found).
PYTHON312_PLACES = (
    "$DEPLOY_TEST_PYTHON312",
    "python3.12 on PATH",
    "/usr/bin",
    "/usr/local/bin",
    "~/.pyenv/versions/3.12*",
)


def python312() -> str | None:
    """A CPython 3.12 (the runtime's version: the wheels are cp312) on this machine."""
    candidates = [
        os.environ.get("DEPLOY_TEST_PYTHON312"),
        shutil.which("python3.12"),
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True),
    ]
    for exe in candidates:
        if not exe or not os.access(exe, os.X_OK):
            continue
        probe = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return exe
    return None


def runtime_provided_dir(dest: Path) -> Path:
    """A folder of symlinks to this venv's boto3/botocore/... (what /var/runtime provides)."""
    dest.mkdir()
    for name in RUNTIME_PROVIDED_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec and spec.origin, f"{name} is not installed in this venv"
        src = Path(spec.origin)
        src = src.parent if src.name == "__init__.py" else src
        (dest / src.name).symlink_to(src)
    return dest
