"""The Lambda artifact (the zip `sls package` built) for each architecture."""

from __future__ import annotations

import json
import os
import platform
import re
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.helpers.lambda_runtime import host_arch, python312, runtime_provided_dir

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # code + layers, unzipped
ELF_MACHINE = {"arm64": 0xB7, "x86_64": 0x3E}  # EM_AARCH64, EM_X86_64
LINUX_TRIPLET = {"arm64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}
WHEEL_ARCH = {"arm64": "aarch64", "x86_64": "x86_64"}
PYTHON_TAG = "cp312"
# import name -> distribution (dist-info) name
RUNTIME_PACKAGES = {
    "pydicom": "pydicom",
    "openjpeg": "pylibjpeg_openjpeg",
    "numpy": "numpy",
    "aws_lambda_powertools": "aws_lambda_powertools",
}
# Lambda-only additions (requirements-lambda.txt): powertools' Tracer needs the X-Ray SDK.
LAMBDA_EXTRAS = {"aws_xray_sdk": "aws_xray_sdk"}
# Shipped by the Lambda Python runtime: must not be in the artifact.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six")
REPO = Path(__file__).resolve().parents[2]
NOT_SHIPPED_PREFIXES = (
    "tests/",
    "fixtures/",
    "bench/",
    "devstack/",
    "docs/",
    ".venv/",
    "node_modules/",
    ".ci/",
    "build/",
    "scripts/",
    ".serverless/",
    ".git/",
)
NOT_SHIPPED_FILES = (
    "serverless.yml",
    "package.json",
    "package-lock.json",
    "deploy.mk",
    "Makefile",
    "requirements-dev.txt",
)


@pytest.fixture(params=["arm64", "x86_64"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def names(packages, arch) -> list[str]:
    with packages[arch].zip() as zf:
        return zf.namelist()


def test_contains_function_code(names: list[str]) -> None:
    assert "handlers/worker.py" in names, "handlers/worker.py (the Lambda handler) is missing"
    assert "pipeline/__init__.py" in names, "the pipeline package is missing"
    assert "pipeline/job/run.py" in names
    # The local stack (moto emulation, worker loop, demo) is not function code.
    assert not [n for n in names if n.startswith("devstack/")]


def test_contains_runtime_packages_with_metadata(names: list[str]) -> None:
    for module, dist in {**RUNTIME_PACKAGES, **LAMBDA_EXTRAS}.items():
        assert f"{module}/__init__.py" in names, f"{module} missing"
        meta = [n for n in names if re.fullmatch(rf"{dist}-[^/]+\.dist-info/METADATA", n)]
        assert len(meta) == 1, f"{dist} dist-info: {meta}"
    # pydicom finds the openjpeg plugin through its entry points.
    assert [n for n in names if re.fullmatch(r"pylibjpeg_openjpeg-[^/]+\.dist-info/entry_points\.txt", n)]


def test_excludes_runtime_provided_and_development_files(names: list[str]) -> None:
    tops = {n.split("/", 1)[0] for n in names}
    for pkg in RUNTIME_PROVIDED:
        assert pkg not in tops and f"{pkg}.py" not in tops, f"{pkg} is provided by the Lambda runtime"
        assert not [t for t in tops if t.startswith(f"{pkg}-") and t.endswith(".dist-info")]
    assert not [n for n in names if n.startswith(NOT_SHIPPED_PREFIXES)]
    assert not [n for n in names if n in NOT_SHIPPED_FILES]
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "/__pycache__/" in n]
    assert not [n for n in names if re.search(r"(^|/)(handlers|pipeline)/(.*/)?tests?/", n)]


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_lambda_requirements_carry_the_runtime_requirements() -> None:
    """requirements-lambda.txt (what the artifact is built from) must not drift from
    requirements.txt (the project's runtime deps): every line of it, verbatim."""
    runtime = _requirements(REPO / "requirements.txt")
    lam = _requirements(REPO / "requirements-lambda.txt")
    assert runtime and set(runtime) <= set(lam), sorted(set(runtime) - set(lam))
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in lam}
    assert not names & {"boto3", "botocore", "s3transfer"}


def _elf_machine(header: bytes) -> int:
    assert header[:4] == b"\x7fELF", "not an ELF file"
    assert header[4] == 2, "not a 64-bit ELF"
    assert header[5] == 1, "not little-endian"
    return struct.unpack_from("<H", header, 18)[0]


def test_compiled_extensions_match_architecture_and_python(packages, arch) -> None:
    with packages[arch].zip() as zf:
        shared = [n for n in zf.namelist() if n.endswith(".so") or ".so." in n.rsplit("/", 1)[-1]]
        assert len(shared) >= 10, shared  # numpy alone has many
        for name in shared:
            with zf.open(name) as fh:
                machine = _elf_machine(fh.read(20))
            assert machine == ELF_MACHINE[arch], f"{name}: e_machine {machine:#x}"
        for name in shared:
            if ".cpython-" in name:
                assert f".cpython-312-{LINUX_TRIPLET[arch]}.so" in name, name
        wheel = [n for n in zf.namelist() if re.fullmatch(r"numpy-[^/]+\.dist-info/WHEEL", n)]
        tags = re.findall(r"^Tag: (\S+)$", zf.read(wheel[0]).decode(), re.M)
    assert tags and all(t.startswith(f"{PYTHON_TAG}-{PYTHON_TAG}-manylinux") for t in tags), tags
    assert all(t.endswith(WHEEL_ARCH[arch]) for t in tags), tags


def test_unzipped_size_below_lambda_limit(packages, arch) -> None:
    artifact = packages[arch].artifact
    with zipfile.ZipFile(artifact) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    zipped = artifact.stat().st_size
    print(
        f"\n{arch}: zipped {zipped / 1e6:.1f} MB, unzipped {unzipped / 1e6:.1f} MB "
        f"(limit {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB)"
    )
    assert unzipped < LAMBDA_UNZIPPED_LIMIT


def test_readme_states_the_artifact_size(packages, arch) -> None:
    """The README's "Artifact size" figures are this build's, within 3 % (pip may pick a newer
    patch release of a wheel): a size claim that no build produces fails here."""
    text = " ".join((REPO / "README.md").read_text().split())
    found = re.search(
        r"Artifact size: arm64 ([\d.]+) MB zipped / ([\d.]+) MB unzipped, x86_64 ([\d.]+) / ([\d.]+) MB", text
    )
    assert found, "README.md: the 'Artifact size: ...' sentence is gone"
    stated = {"arm64": found.group(1, 2), "x86_64": found.group(3, 4)}[arch]
    artifact = packages[arch].artifact
    with zipfile.ZipFile(artifact) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    for claim, real in zip(map(float, stated), (artifact.stat().st_size / 1e6, unzipped / 1e6), strict=True):
        assert abs(claim - real) <= 0.03 * real, f"README says {claim} MB, the {arch} build is {real:.1f} MB"


# ------------------------------------------------------------------ import from the artifact
IMPORT_CHECK = r"""
import importlib.metadata as md, json, os, sys
root, runtime = sys.argv[1], sys.argv[2]
sys.path[:0] = [root, runtime]  # like Lambda: /var/task first, then the runtime's boto3
import numpy, openjpeg, pydicom, aws_lambda_powertools
from openjpeg.utils import encode_array
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
Tracer()  # imports the X-Ray SDK (and botocore) even when tracing is off
files = {m.__name__: m.__file__ for m in (numpy, openjpeg, pydicom, aws_lambda_powertools)}
arr = (numpy.arange(64 * 48, dtype=numpy.uint16).reshape(64, 48) * 7) % 4096
stream = encode_array(arr, bits_stored=12)
assert (openjpeg.decode(stream) == arr).all(), "J2K round trip differs"
decoders = [e.name for e in md.entry_points(group="pylibjpeg.jpeg_2000_decoders")]
import boto3, botocore
handler = None
if os.path.exists(os.path.join(root, "handlers", "worker.py")):
    import handlers.worker
    handler = callable(getattr(handlers.worker, "handler", None))
print(json.dumps({"files": files, "pydicom": md.version("pydicom"),
                  "pydicom_module": pydicom.__version__, "decoders": decoders,
                  "numpy": numpy.__version__, "j2k_bytes": len(stream),
                  "boto3": boto3.__file__, "botocore": botocore.__file__, "handler": handler}))
"""


def test_artifact_imports_and_encodes_on_this_machine(packages, tmp_path: Path) -> None:
    """Unzip the artifact built for this machine's CPU and use it from a bare Python 3.12
    (-I -S: no site-packages, no PYTHON* variables) with only the artifact and the
    runtime-provided boto3 on sys.path: numpy/openjpeg/pydicom/powertools come from the
    artifact, a J2K round trip works, and the handler module imports."""
    arch = host_arch()
    if arch is None:
        pytest.skip(f"no artifact for this CPU ({platform.machine()})")
    python = python312()
    if python is None:
        pytest.skip("no CPython 3.12 here (the artifact holds cp312 wheels); set DEPLOY_TEST_PYTHON312")
    task = tmp_path / "task"
    with packages[arch].zip() as zf:
        zf.extractall(task)
    runtime = runtime_provided_dir(tmp_path / "runtime")
    env = {  # the function's environment, with dummy values; no AWS call is made
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DATA_BUCKET": "data-bucket",
        "TARGET_BUCKET": "data-bucket",
        "SOURCE_PREFIX": "incoming/",
        "TARGET_PREFIX": "compressed/",
        "EVENT_BUS_NAME": "bus",
        "COMPRESSION_RATE": "100",
        "LOG_LEVEL": "INFO",
        "POWERTOOLS_SERVICE_NAME": "dicom-compression",
        "POWERTOOLS_METRICS_NAMESPACE": "DicomCompression",
    }
    proc = subprocess.run(
        [python, "-I", "-S", "-c", IMPORT_CHECK, str(task), str(runtime)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for module, path in result["files"].items():
        assert path.startswith(str(task)), f"{module} imported from {path}"
    assert result["boto3"].startswith(str(runtime)), result["boto3"]
    assert result["botocore"].startswith(str(runtime)), result["botocore"]
    assert result["pydicom"] == result["pydicom_module"]
    assert "openjpeg" in result["decoders"]
    assert result["j2k_bytes"] > 0
    assert result["handler"] in (True, None), "handlers/worker.py has no callable `handler`"
