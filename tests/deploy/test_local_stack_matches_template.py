"""One source of truth: the local stack is the packaged template's stack.

``RunningStack`` creates its resources from the packaged CloudFormation template with moto's
CloudFormation (devstack/template.py) whenever a current packaged template exists, and
from the hand-written ``create_resources`` otherwise (a fresh checkout without Node.js, or
right after serverless.yml changed). Both are checked here against the packaged template,
on the live moto resources: S3 notification events and filters, redrive (and that the
worker's MAX_RECEIVES default matches it), retention, the event rule's pattern and queue
target, and the worker's configuration from the function's environment. The study queue's
visibility timeout is the one deliberate difference: locally it is a parameter of
``RunningStack`` (fast retries), in the template 6 x the function timeout.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cloudformation import Stack
from tests.helpers.lambda_runtime import host_arch

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

LOCAL_VISIBILITY_TIMEOUT = 17  # anything but the default: proves the local value is the parameter
# Function environment the local stack does not set: the worker's default must be the
# template's value (LOG_LEVEL: powertools' default; COMPRESSION_RATE: pipeline.config's;
# MEMORY_BUDGET_MB: '' = derived from the memory there is, pipeline.budget's default; MIN_PSNR_DB:
# pipeline.config's DEFAULT_MIN_PSNR).
UNSET_LOCALLY = {
    "COMPRESSION_RATE": "100",
    "LOG_LEVEL": "INFO",
    "MEMORY_BUDGET_MB": "",
    "MIN_PSNR_DB": "40",
    "COLOUR_TRANSFORM": "false",
    "UID_ROOT": "",
}
# Set locally only: outside Lambda there is no X-Ray daemon (REFERENCE.md section 4).
LOCAL_ONLY = {"POWERTOOLS_TRACE_DISABLED": "1"}


def _arch() -> str:
    return host_arch() or "x86_64"


@pytest.fixture(params=["template", "builtin"])
def live(request, packages) -> Any:
    """A running local stack, from the packaged template or from create_resources."""
    from devstack.stack import RunningStack

    template = packages[_arch()].template_path if request.param == "template" else None
    running = RunningStack(visibility_timeout=LOCAL_VISIBILITY_TIMEOUT, template=template)
    with running as stack:
        yield request.param, running, stack


def _clients(endpoint: str) -> tuple[Any, Any, Any]:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return tuple(session.client(s, endpoint_url=endpoint) for s in ("s3", "sqs", "events"))  # type: ignore[return-value]


def _attrs(sqs: Any, url: str) -> dict[str, str]:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def _notification_rules(configs: list[dict], queue: Any, *, template: bool) -> set[tuple]:
    out = set()
    for qc in configs:
        if template:
            events, arn, rules = [qc["Event"]], qc["Queue"], qc["Filter"]["S3Key"]["Rules"]
        else:
            events, arn, rules = qc["Events"], qc["QueueArn"], qc["Filter"]["Key"]["FilterRules"]
        for event in events:
            out.add((event, queue(arn), frozenset((r["Name"].lower(), r["Value"]) for r in rules)))
    return out


def test_local_stack_agrees_with_the_packaged_template(live, templates) -> None:
    mode, running, stack = live
    cfn = Stack(templates[_arch()])
    s3, sqs, events = _clients(stack.endpoint)
    queue, dlq, note = (_attrs(sqs, u) for u in (stack.queue_url, stack.dlq_url, stack.notification_queue_url))
    if mode == "template":
        assert running.template_used is not None

    # S3 -> study queue: the same events and filters (prefix incoming/, two suffixes).
    want = _notification_rules(
        cfn.props("DataBucket")["NotificationConfiguration"]["QueueConfigurations"],
        {"{StudyQueue.Arn}": "study-queue"}.get,
        template=True,
    )
    got = _notification_rules(
        s3.get_bucket_notification_configuration(Bucket=stack.bucket)["QueueConfigurations"],
        {queue["QueueArn"]: "study-queue"}.get,
        template=False,
    )
    assert got == want
    assert {dict(r)["prefix"] for *_, r in got} == {"incoming/"}
    assert {dict(r)["suffix"] for *_, r in got} == {"_READY", "manifest.json"}

    # Redrive after maxReceiveCount receives to the DLQ; the worker's last attempt agrees.
    tq, tdlq = cfn.props("StudyQueue"), cfn.props("StudyDeadLetterQueue")
    redrive = json.loads(queue["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == tq["RedrivePolicy"]["maxReceiveCount"] == 3
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(dlq["MessageRetentionPeriod"]) == tdlq["MessageRetentionPeriod"]
    assert int(queue["MessageRetentionPeriod"]) == tq["MessageRetentionPeriod"]
    assert "RedrivePolicy" not in dlq

    # Bus -> rule (source + both detail-types) -> the notification queue.
    trule = cfn.props("StudyEventsToQueueRule")
    rules = events.list_rules(EventBusName=stack.bus_name)["Rules"]
    targeted = {
        r["Name"]: events.list_targets_by_rule(Rule=r["Name"], EventBusName=stack.bus_name)["Targets"] for r in rules
    }
    (rule,) = [r for r in rules if any(t["Arn"] == note["QueueArn"] for t in targeted[r["Name"]])]
    pattern = json.loads(rule["EventPattern"])
    assert pattern["source"] == trule["EventPattern"]["source"] == ["dicom.compression"]
    assert (
        sorted(pattern["detail-type"])
        == sorted(trule["EventPattern"]["detail-type"])
        == ["Study Compressed", "Study Compression Failed"]
    )
    assert set(pattern) == set(trule["EventPattern"])
    assert rule.get("State", "ENABLED") == trule["State"] == "ENABLED"
    (target,) = targeted[rule["Name"]]
    (ttarget,) = trule["Targets"]
    assert ttarget["Arn"] == "{NotificationQueue.Arn}"
    assert target["Arn"] == note["QueueArn"] and target["Arn"].startswith("arn:aws:sqs:")

    # The worker's environment: the function's, with local names for bucket and bus.
    tenv = cfn.props("WorkerLambdaFunction")["Environment"]["Variables"]
    assert tenv["DATA_BUCKET"] == tenv["TARGET_BUCKET"] == cfn.props("DataBucket")["BucketName"]
    assert tenv["EVENT_BUS_NAME"] == "{StudyEventBus}" and trule["EventBusName"] == "{StudyEventBus}"
    local_env = {k: v for k, v in stack.env().items() if not k.startswith("AWS_")}
    for key, value in LOCAL_ONLY.items():
        assert local_env.pop(key) == value
    assert set(local_env) <= set(tenv), sorted(set(local_env) - set(tenv))
    assert {k: tenv[k] for k in set(tenv) - set(local_env)} == UNSET_LOCALLY
    localized = {**tenv, "DATA_BUCKET": stack.bucket, "TARGET_BUCKET": stack.bucket, "EVENT_BUS_NAME": stack.bus_name}
    for key in local_env:
        assert local_env[key] == localized[key], key
    from pipeline.job.config import ServiceConfig

    deployed_cfg = ServiceConfig.from_env(localized)
    assert ServiceConfig.from_env(stack.env()) == deployed_cfg
    assert deployed_cfg.max_receives == tq["RedrivePolicy"]["maxReceiveCount"]
    assert s3.head_bucket(Bucket=stack.bucket)
    assert stack.bus_name in {b["Name"] for b in events.list_event_buses()["EventBuses"]}

    # Visibility timeout: 6 x the function timeout when deployed; locally the parameter.
    assert tq["VisibilityTimeout"] >= 6 * cfn.props("WorkerLambdaFunction")["Timeout"]
    assert int(queue["VisibilityTimeout"]) == LOCAL_VISIBILITY_TIMEOUT
    from devstack.stack import RunningStack

    param = inspect.signature(RunningStack).parameters["visibility_timeout"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and isinstance(param.default, int)
    assert param.default < tq["VisibilityTimeout"]


def test_running_stack_uses_the_current_packaged_template(packages, monkeypatch) -> None:
    from devstack import template as tpl
    from devstack.stack import RunningStack

    monkeypatch.delenv(tpl.TEMPLATE_ENV, raising=False)
    found = tpl.packaged_template()
    assert found is not None and found.name == "cloudformation-template-update-stack.json"
    assert found.parent.parent == Path(tpl.PACKAGE_DIR)
    running = RunningStack()
    with running as stack:
        assert running.template_used == found
        assert stack.bucket == "dicom-compression-local-data"  # the README's local bucket
    monkeypatch.setenv(tpl.TEMPLATE_ENV, "builtin")
    assert tpl.packaged_template() is None


def test_stale_packaged_template_is_not_used(tmp_path: Path, monkeypatch) -> None:
    """Older than serverless.yml: it no longer describes the stack; the fallback is used."""
    import os

    from devstack import template as tpl

    monkeypatch.delenv(tpl.TEMPLATE_ENV, raising=False)
    package_dir = tmp_path / "build" / "package"
    (package_dir / "x86_64").mkdir(parents=True)
    template = package_dir / "x86_64" / tpl.TEMPLATE_NAME
    template.write_text("{}")
    source = tmp_path / "serverless.yml"
    source.write_text("service: x\n")
    os.utime(template, (1_000_000, 1_000_000))
    assert tpl.packaged_template(package_dir) is None
    os.utime(source, (500_000, 500_000))
    assert tpl.packaged_template(package_dir) == template


def test_local_template_drops_only_lambdas_part(templates) -> None:
    """What the local stack leaves out of the packaged template, and what it changes."""
    from devstack.template import LocalTemplate

    packaged = templates[_arch()]
    local = LocalTemplate(packaged, visibility_timeout=LOCAL_VISIBILITY_TIMEOUT)
    assert local.dropped == sorted(
        [
            "ClinicUploaderPolicy",  # no IAM enforcement locally (test_clinic_access.py enforces it)
            "IamRoleLambdaExecution",
            "ServerlessDeploymentBucket",
            "ServerlessDeploymentBucketPolicy",
            "WorkerErrorsAlarm",
            "WorkerEventSourceMappingSQSStudyQueue",
            "WorkerKmsPolicy",
            "WorkerLambdaFunction",
            "WorkerLogGroup",
        ]
    )
    kept = local.template["Resources"]
    assert set(kept) == set(packaged["Resources"]) - set(local.dropped)
    assert not [k for k, v in kept.items() if v["Type"].startswith(("AWS::Lambda::", "AWS::IAM::"))]
    assert local.packaged_visibility_timeout == packaged["Resources"]["StudyQueue"]["Properties"]["VisibilityTimeout"]
    assert kept["StudyQueue"]["Properties"]["VisibilityTimeout"] == LOCAL_VISIBILITY_TIMEOUT
    assert "NotificationConfiguration" not in kept["DataBucket"]["Properties"]  # applied via the S3 API
    assert (
        local.notification_configuration
        == packaged["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]
    )
    # Every other property is the packaged one, up to the local names.
    for rid, res in kept.items():
        if rid in ("StudyQueue", "DataBucket"):
            continue
        a = json.dumps(res, sort_keys=True)
        b = json.dumps(packaged["Resources"][rid], sort_keys=True).replace(
            "dicom-compression-dev", "dicom-compression-local"
        )
        if a != b:  # bucket name expression and Ref StudyEventBus -> its name
            assert "dicom-compression-local-data" in a or '"dicom-compression-local"' in a, rid
