"""checkov, as a PHI reviewer runs it, finds nothing on the packaged templates.

Every finding is fixed or skipped in serverless.yml with a one-line reason (a resource's
``Metadata.checkov.skip``); the skipped set is listed here, so a new suppression is a
reviewed change and not a quiet one. checkov lives in .venv-checkov (deploy.mk
``checkov-install``, which ``make test`` runs first; installed here when missing): its
pinned dependencies conflict with the project's. Offline: no guideline download, no update
check.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
OFFLINE = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}

#: (check, resource) -> what the reason must mention (the full reason is in serverless.yml).
SUPPRESSED = {
    ("CKV_AWS_19", "AWS::S3::Bucket.DataBucket"): "Fn::If",
    ("CKV_AWS_21", "AWS::S3::Bucket.DataBucket"): "Versioning off by design",
    ("CKV_AWS_27", "AWS::SQS::Queue.StudyQueue"): "SSE-SQS",
    ("CKV_AWS_27", "AWS::SQS::Queue.StudyDeadLetterQueue"): "SSE-SQS",
    ("CKV_AWS_27", "AWS::SQS::Queue.NotificationQueue"): "SSE-SQS",
    ("CKV_AWS_116", "AWS::Lambda::Function.WorkerLambdaFunction"): "redrive DLQ",
    ("CKV_AWS_117", "AWS::Lambda::Function.WorkerLambdaFunction"): "VPC",
    ("CKV_AWS_173", "AWS::Lambda::Function.WorkerLambdaFunction"): "no secret",
    ("CKV_AWS_18", "AWS::S3::Bucket.ServerlessDeploymentBucket"): "code artifacts only",
    ("CKV_AWS_21", "AWS::S3::Bucket.ServerlessDeploymentBucket"): "timestamped key",
    ("CKV_AWS_18", "AWS::S3::Bucket.AccessLogBucket"): "access-log bucket",
    ("CKV_AWS_21", "AWS::S3::Bucket.AccessLogBucket"): "written once",
}
#: The findings of the issue that are fixed, not skipped: they must pass.
FIXED = {
    ("CKV_AWS_18", "AWS::S3::Bucket.DataBucket"),  # server access logging
    ("CKV_AWS_26", "AWS::SNS::Topic.NotificationTopic"),  # KMS
    ("CKV_AWS_158", "AWS::Logs::LogGroup.WorkerLogGroup"),  # KMS option
}


@pytest.fixture(scope="session")
def checkov() -> Path:
    if not CHECKOV.is_file():
        proc = subprocess.run(
            ["make", "-f", "deploy.mk", "checkov-install"], cwd=REPO, capture_output=True, text=True, timeout=1200
        )
        if proc.returncode != 0:
            pytest.fail(
                f"make -f deploy.mk checkov-install failed:\n{(proc.stdout + proc.stderr)[-4000:]}", pytrace=False
            )
    return CHECKOV


@pytest.fixture(scope="session")
def report(checkov: Path, packages) -> dict[str, dict]:
    """checkov's JSON results for each architecture's template, from one run."""
    cmd = [str(checkov), "--framework", "cloudformation", "--skip-download", "--output", "json"]
    # Paths relative to the repository: given absolute paths, checkov 3.3.30's secrets check
    # (CKV_AWS_45) flagged the same template in one clone folder and not in another.
    for pkg in packages.values():
        cmd += ["--file", str(pkg.template_path.resolve().relative_to(REPO.resolve()))]
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]  # 1: failed checks, read below
    results = json.loads(proc.stdout)
    assert isinstance(results, dict) and results["check_type"] == "cloudformation", proc.stdout[:500]
    out: dict[str, dict] = {"summary": results["summary"]}
    for arch, pkg in packages.items():
        template = pkg.template_path.resolve()
        out[arch] = {
            kind: [c for c in results["results"][kind] if (REPO / c["file_abs_path"]).resolve() == template]
            for kind in ("passed_checks", "failed_checks", "skipped_checks")
        }
    return out


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_no_finding(report: dict, arch: str) -> None:
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report[arch]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report[arch]["passed_checks"], "checkov checked nothing"


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_every_suppression_is_listed_and_has_its_reason(report: dict, arch: str) -> None:
    skipped = {
        (c["check_id"], c["resource"]): c["check_result"].get("suppress_comment") or ""
        for c in report[arch]["skipped_checks"]
    }
    assert set(skipped) == set(SUPPRESSED)
    for key, reason in skipped.items():
        assert SUPPRESSED[key] in reason, (key, reason)
        assert "\n" not in reason.strip() and len(reason) <= 160, (key, reason)  # one line


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_the_real_findings_are_fixed_not_skipped(report: dict, arch: str) -> None:
    passed = {(c["check_id"], c["resource"]) for c in report[arch]["passed_checks"]}
    assert FIXED <= passed, sorted(FIXED - passed)
