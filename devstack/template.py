"""The local stack created from the packaged CloudFormation template (one source of truth).

``make -f deploy.mk package`` turns ``serverless.yml`` into
``build/package/<arch>/cloudformation-template-update-stack.json``. When that file exists,
:class:`devstack.stack.RunningStack` creates the local resources from it with moto's
CloudFormation (``create_stack`` against the moto server) instead of from the hand-written
``create_resources``, so the bucket, queues, redrive, retention, bus and rule are the deployed
ones. What the local stack changes, and why (each is explicit here, nothing else is):

- Lambda's part (function, its role/policies, log group, SQS event-source mapping) is not
  created: ``devstack.poller`` plays Lambda, and moto would try to run the mapping in
  Docker. Resources that reference them (the function-errors alarm) go with them, as do
  Serverless' own deployment bucket and its policy.
- The clinic uploaders' managed policy is not created: the local stack enforces no IAM, so it
  would only be stored (and moto's CloudFormation keeps the ``AWS::NoValue`` of its optional
  KMS statement, then rejects the document). tests/deploy/test_clinic_access.py enforces it.
- moto's CloudFormation ignores a bucket's ``NotificationConfiguration``: it is applied through
  the S3 API afterwards, from the template's own values (queue ARNs resolved by moto).
- moto resolves ``Ref`` to an ``AWS::Events::EventBus`` to an object, not the bus name: such
  Refs are replaced by the bus' ``Name`` before ``create_stack``.
- Names: the packaged name prefix (``<service>-<stage>``, the bus' Name) becomes
  ``dicom-compression-local`` wherever it is a name or part of one (queues, bus, rules,
  topic, alarms, ARN patterns), and the data bucket's computed name becomes
  ``dicom-compression-local-data`` (the README's local bucket) everywhere it appears.
- The study queue's visibility timeout is a parameter (default 30 s, for fast local retries;
  the deployed value is 6 x the function timeout).
- Bucket policy, queue policies and alarms are passed to moto, which does not create or
  enforce them (it warns); the lifecycle rule is not applied by moto either.

``Fn::Sub`` with ``AWS::AccountId``/``AWS::Region``/``AWS::StackName`` and the template's
Conditions are resolved by moto itself (account 123456789012, region us-east-1).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.resources import REGION, REPO, STAGE, LocalStack

PACKAGE_DIR = REPO / "build" / "package"
TEMPLATE_NAME = "cloudformation-template-update-stack.json"
LOCAL_NAME_PREFIX = f"dicom-compression-{STAGE}"
LOCAL_BUCKET = f"dicom-compression-{STAGE}-data"
LOCAL_STACK_NAME = f"dicom-compression-{STAGE}"
# ``RunningStack`` reads this: a template path, or "builtin" for the hand-written resources.
TEMPLATE_ENV = "DICOM_LOCAL_STACK_TEMPLATE"

# Played locally by devstack.poller (and moto would run event-source mappings in Docker).
LAMBDA_TYPES = frozenset(
    {
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Version",
        "AWS::Lambda::Permission",
        "AWS::Lambda::EventInvokeConfig",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::Logs::LogGroup",
    }
)
SERVERLESS_OWN = frozenset({"ServerlessDeploymentBucket", "ServerlessDeploymentBucketPolicy"})
# IAM for principals outside the stack (clinics): nothing to enforce it locally.
UNENFORCED_LOCALLY = frozenset({"AWS::IAM::ManagedPolicy"})
_SUB_REF = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


class TemplateError(RuntimeError):
    """The packaged template cannot be turned into a local stack."""


_BYPASS = f" (set {TEMPLATE_ENV}=builtin to use devstack.stack.create_resources instead)"


def packaged_template(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The packaged template to build the local stack from, if any.

    ``$DICOM_LOCAL_STACK_TEMPLATE`` wins ("builtin" = none); otherwise the newest of
    build/package/*/cloudformation-template-update-stack.json (the architectures differ only
    in the function's settings, which is not created locally), unless it is older than
    serverless.yml (then it no longer describes the stack: None, until the next package)."""
    chosen = os.environ.get(TEMPLATE_ENV, "").strip()
    if chosen:
        return None if chosen.lower() in ("builtin", "none", "0") else Path(chosen)
    found = [p for p in package_dir.glob(f"*/{TEMPLATE_NAME}") if p.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    source = package_dir.parents[1] / "serverless.yml"
    if source.is_file() and source.stat().st_mtime > newest.stat().st_mtime:
        return None
    return newest


# ------------------------------------------------------------------ template walking
def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _replace(node: Any, fn: Any) -> Any:
    """Copy of ``node`` where every sub-node for which ``fn`` returns non-None is replaced."""
    new = fn(node)
    if new is not None:
        return new
    if isinstance(node, dict):
        return {k: _replace(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, fn) for v in node]
    return node


def references(node: Any) -> set[str]:
    """Logical ids (and parameters) that ``node`` refers to: Ref, Fn::GetAtt, Fn::Sub."""
    out: set[str] = set()
    for n in _walk(node):
        if not isinstance(n, dict) or len(n) != 1:
            continue
        ((key, arg),) = n.items()
        if key == "Ref" and isinstance(arg, str):
            out.add(arg)
        elif key == "Fn::GetAtt":
            out.add((arg if isinstance(arg, list) else arg.split(".", 1))[0])
        elif key == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            out.update(_SUB_REF.findall(text))
    return out


def _depends_on(resource: dict) -> set[str]:
    deps = resource.get("DependsOn", [])
    return ({deps} if isinstance(deps, str) else set(deps)) | references(resource)


def _getatt_target(node: Any) -> str | None:
    if isinstance(node, dict) and set(node) == {"Fn::GetAtt"}:
        arg = node["Fn::GetAtt"]
        return (arg if isinstance(arg, list) else arg.split(".", 1))[0]
    return None


# ------------------------------------------------------------------ the local template
class LocalTemplate:
    """The packaged template, reduced and adjusted for the local stack (see the module doc)."""

    def __init__(
        self,
        template: dict,
        *,
        visibility_timeout: int = 30,
        bucket_name: str = LOCAL_BUCKET,
        name_prefix: str = LOCAL_NAME_PREFIX,
    ) -> None:
        self.packaged = template
        t = copy.deepcopy(template)
        resources: dict[str, dict] = t["Resources"]

        functions = [k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"]
        if len(functions) != 1:
            raise TemplateError(f"expected one Lambda function, found {functions}")
        self.function_id = functions[0]
        mappings = [v for v in resources.values() if v["Type"] == "AWS::Lambda::EventSourceMapping"]
        queues = {_getatt_target(m["Properties"].get("EventSourceArn")) for m in mappings}
        if len(queues) != 1 or None in queues:
            raise TemplateError(f"expected one SQS event source, found {queues}")
        self.study_queue_id: str = queues.pop()
        notified = [
            k
            for k, v in resources.items()
            if v["Type"] == "AWS::S3::Bucket"
            and any(
                _getatt_target(qc.get("Queue")) == self.study_queue_id
                for qc in v.get("Properties", {}).get("NotificationConfiguration", {}).get("QueueConfigurations", [])
            )
        ]
        if len(notified) != 1:
            raise TemplateError(f"expected one bucket notifying {self.study_queue_id}, found {notified}")
        self.bucket_id = notified[0]

        # Names: the packaged <service>-<stage> prefix (the bus' Name) -> the local one.
        buses = {k: v["Properties"]["Name"] for k, v in resources.items() if v["Type"] == "AWS::Events::EventBus"}
        packaged_prefix = next(iter(buses.values())) if len(buses) == 1 else None
        if isinstance(packaged_prefix, str) and packaged_prefix != name_prefix:
            # Every name built from it (queues, bus, rules, topic, alarms, ARN patterns).
            word = re.compile(r"(?<![\w-])" + re.escape(packaged_prefix) + r"(?!\w)")
            t = _replace(t, lambda n: word.sub(name_prefix, n) if isinstance(n, str) else None)
            resources = t["Resources"]
        buses = {k: v["Properties"]["Name"] for k, v in resources.items() if v["Type"] == "AWS::Events::EventBus"}
        # moto: a Ref to an EventBus must give its name.
        t = _replace(
            t, lambda n: buses[n["Ref"]] if isinstance(n, dict) and set(n) == {"Ref"} and n["Ref"] in buses else None
        )
        # The data bucket's computed name (an expression repeated wherever the name is used)
        # becomes the local name, everywhere.
        name_expr = t["Resources"][self.bucket_id]["Properties"].get("BucketName")
        if name_expr is not None:
            t = _replace(t, lambda n: bucket_name if n == name_expr else None)
        resources = t["Resources"]
        # The function's environment, with the local names (moto resolves the rest).
        self.function_env: dict[str, Any] = (
            resources[self.function_id].get("Properties", {}).get("Environment", {}).get("Variables", {})
        )

        # Lambda's part, Serverless' deployment bucket, the clinics' policy, and whatever refers to them.
        dropped = {k for k, v in resources.items() if v["Type"] in LAMBDA_TYPES | UNENFORCED_LOCALLY}
        dropped |= SERVERLESS_OWN & set(resources)
        while True:
            more = {k for k, v in resources.items() if k not in dropped and _depends_on(v) & dropped}
            if not more:
                break
            dropped |= more
        self.dropped = sorted(dropped)
        for k in dropped:
            del resources[k]
        t["Outputs"] = {k: v for k, v in t.get("Outputs", {}).items() if not references(v) & dropped}

        # moto ignores it at create time; applied through the S3 API (create_resources_from_template).
        self.notification_configuration = resources[self.bucket_id]["Properties"].pop("NotificationConfiguration")

        props = resources[self.study_queue_id]["Properties"]
        self.packaged_visibility_timeout = props.get("VisibilityTimeout")
        props["VisibilityTimeout"] = visibility_timeout  # local retries in seconds, not minutes

        self.template = t

    def resolve_outputs(self, expressions: dict[str, Any]) -> dict[str, Any]:
        """The template with one extra Output per expression, for moto to evaluate."""
        t = copy.deepcopy(self.template)
        for key, expr in expressions.items():
            t.setdefault("Outputs", {})[key] = {"Value": expr}
        return t


# ------------------------------------------------------------------ create
def _session_clients(endpoint: str, *services: str) -> list[Any]:
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return [session.client(s, endpoint_url=endpoint) for s in services]


def create_resources_from_template(
    endpoint: str,
    template_path: str | Path,
    *,
    visibility_timeout: int = 30,
    stack_name: str = LOCAL_STACK_NAME,
) -> LocalStack:
    """Create the packaged template's resources on the moto server at ``endpoint``."""
    cfn, s3, sqs = _session_clients(endpoint, "cloudformation", "s3", "sqs")
    local = LocalTemplate(json.loads(Path(template_path).read_text()), visibility_timeout=visibility_timeout)

    # Everything the local stack needs to know, evaluated by moto from the template itself.
    wanted: dict[str, Any] = {}
    env_keys = {}
    for i, (name, expr) in enumerate(sorted(local.function_env.items())):
        env_keys[f"LocalEnv{i}"] = name
        wanted[f"LocalEnv{i}"] = expr
    wanted["LocalStudyQueueName"] = {"Fn::GetAtt": [local.study_queue_id, "QueueName"]}
    placeholders: dict[str, Any] = {}

    def placeholder(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1 and next(iter(node)).startswith(("Ref", "Fn::")):
            key = f"LocalNotification{len(placeholders)}"
            placeholders[key] = node
            return "{" + key + "}"
        return None

    notification = _replace(local.notification_configuration, placeholder)
    wanted.update(placeholders)

    body = json.dumps(local.resolve_outputs(wanted))
    try:
        cfn.create_stack(StackName=stack_name, TemplateBody=body)
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    except Exception as exc:
        raise TemplateError(f"moto could not create the stack from {template_path}: {exc}{_BYPASS}") from exc
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise TemplateError(f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}{_BYPASS}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = sorted(set(wanted) - set(outputs))
    if missing:
        raise TemplateError(f"moto did not resolve {missing}")

    env = {name: outputs[key] for key, name in env_keys.items()}
    data_bucket = env.get("DATA_BUCKET")
    if not data_bucket or env.get("TARGET_BUCKET", data_bucket) != data_bucket:
        raise TemplateError(f"local stack needs DATA_BUCKET == TARGET_BUCKET, got {env}")

    # The bucket's notifications, as the template declares them (moto ignored them).
    def fill(node: Any) -> Any:
        if isinstance(node, str) and node.startswith("{LocalNotification") and node.endswith("}"):
            return outputs[node[1:-1]]
        return None

    resolved = _replace(notification, fill)
    s3.put_bucket_notification_configuration(
        Bucket=data_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": f"study-marker-{i}",
                    "QueueArn": qc["Queue"],
                    "Events": [qc["Event"]] if isinstance(qc["Event"], str) else list(qc["Event"]),
                    **({"Filter": {"Key": {"FilterRules": qc["Filter"]["S3Key"]["Rules"]}}} if "Filter" in qc else {}),
                }
                for i, qc in enumerate(resolved.get("QueueConfigurations", []))
            ]
        },
    )

    study_queue_url = sqs.get_queue_url(QueueName=outputs["LocalStudyQueueName"])["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=study_queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    dlq_url = sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[-1])["QueueUrl"]
    note_url = _notification_queue_url(cfn, sqs, local, stack_name)
    return LocalStack(
        endpoint,
        data_bucket,
        study_queue_url,
        dlq_url,
        note_url,
        env["EVENT_BUS_NAME"],
        source_prefix=env.get("SOURCE_PREFIX", "incoming/"),
        target_prefix=env.get("TARGET_PREFIX", "compressed/"),
    )


def _notification_queue_url(cfn: Any, sqs: Any, local: LocalTemplate, stack_name: str) -> str:
    """The SQS queue the created event rule(s) target: exactly one."""
    created = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    }
    resources = local.template["Resources"]
    targets = {
        _getatt_target(target.get("Arn"))
        for rid, res in resources.items()
        if res["Type"] == "AWS::Events::Rule" and rid in created
        for target in res["Properties"].get("Targets", [])
    }
    queues = {t for t in targets if t and resources.get(t, {}).get("Type") == "AWS::SQS::Queue"}
    if len(queues) != 1:
        raise TemplateError(f"expected the event rules to target one SQS queue, found {sorted(map(str, targets))}")
    physical = created[queues.pop()]  # moto: the queue URL, with AWS' host
    return sqs.get_queue_url(QueueName=physical.rstrip("/").rsplit("/", 1)[-1])["QueueUrl"]
