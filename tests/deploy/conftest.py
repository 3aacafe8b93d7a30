"""Deployment tests: the Serverless package (template + artifact) for both architectures.

The session fixture `packages` runs `make -f deploy.mk package ARCH=<arch>` for each
architecture whose output is missing or older than its inputs (serverless.yml,
requirements.txt, deploy.mk, package*.json, scripts/package/, handlers/, pipeline/). On a
fresh machine that takes a minute or two (npm ci + pip downloads). Nothing contacts AWS.

Select with `-m deploy`, skip with `-m "not deploy"`.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARCHES = ("arm64", "x86_64")
SERVICE = "dicom-compression"
PACKAGE_TIMEOUT_S = 1800

# What the package is built from: newer than the artifact => package again.
PACKAGE_INPUTS = (
    "serverless.yml",
    "requirements.txt",
    "requirements-lambda.txt",
    "deploy.mk",
    "package.json",
    "package-lock.json",
    "scripts/package",
    "handlers",
    "pipeline",
)


@dataclass(frozen=True)
class Package:
    arch: str
    directory: Path

    @property
    def artifact(self) -> Path:
        return self.directory / f"{SERVICE}.zip"

    @property
    def template_path(self) -> Path:
        return self.directory / "cloudformation-template-update-stack.json"

    def template(self) -> dict:
        return json.loads(self.template_path.read_text())

    def zip(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.artifact)


def _newest_input_mtime() -> float:
    newest = 0.0
    for rel in PACKAGE_INPUTS:
        path = REPO / rel
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for p in path.rglob("*"):
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                    newest = max(newest, p.stat().st_mtime)
    return newest


def _is_current(pkg: Package) -> bool:
    if not (pkg.artifact.is_file() and pkg.template_path.is_file()):
        return False
    built = min(pkg.artifact.stat().st_mtime, pkg.template_path.stat().st_mtime)
    return built >= _newest_input_mtime()


def _package(arch: str) -> None:
    cmd = ["make", "-f", "deploy.mk", "package", f"ARCH={arch}"]
    print(f"\n[deploy tests] packaging {arch}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=PACKAGE_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"`{' '.join(cmd)}` failed with exit {proc.returncode}:\n{tail}", pytrace=False)
    print(proc.stdout[-600:], flush=True)


@pytest.fixture(scope="session")
def packages() -> dict[str, Package]:
    """Both architectures' packages, built (serially, under a lock) when missing or stale."""
    out = {arch: Package(arch, REPO / "build" / "package" / arch) for arch in ARCHES}
    lock_path = REPO / "build" / "package" / ".deploy-tests.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers / parallel runs
        for arch, pkg in out.items():
            if not _is_current(pkg):
                _package(arch)
            assert pkg.artifact.is_file(), f"no artifact at {pkg.artifact}"
            assert pkg.template_path.is_file(), f"no template at {pkg.template_path}"
    return out


@pytest.fixture(scope="session")
def templates(packages: dict[str, Package]) -> dict[str, dict]:
    return {arch: pkg.template() for arch, pkg in packages.items()}


@pytest.fixture(scope="session")
def template(templates: dict[str, dict]) -> dict:
    """The default (arm64) template."""
    return templates["arm64"]
