"""The packaged CloudFormation template has every resource and setting the issue asks for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.cloudformation import ACCOUNT, STACK, Stack

REPO = Path(__file__).resolve().parents[2]
BUCKET = f"{STACK}-data-{ACCOUNT}-us-east-1"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
DETAIL_TYPES = {"Study Compressed", "Study Compression Failed"}


@pytest.fixture(params=["arm64", "x86_64"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def stack(templates, arch) -> Stack:
    return Stack(templates[arch])


def only(mapping: dict) -> tuple[str, dict]:
    assert len(mapping) == 1, sorted(mapping)
    return next(iter(mapping.items()))


# ------------------------------------------------------------------ function
def test_worker_function_settings(stack: Stack, arch: str) -> None:
    fn = stack.props("WorkerLambdaFunction")
    assert fn["Handler"] == "handlers/worker.handler"
    assert fn["Runtime"] == "python3.12"
    assert fn["Architectures"] == [arch]
    assert fn["MemorySize"] == 1769
    assert fn["Timeout"] == 900
    assert fn["ReservedConcurrentExecutions"] == 10
    assert fn["Role"] == "{IamRoleLambdaExecution.Arn}"
    assert fn["TracingConfig"] == {"Mode": "Active"}  # powertools Tracer -> X-Ray
    assert fn["EphemeralStorage"] == {"Size": 2048}  # the frame spool of large objects
    assert fn["Environment"]["Variables"] == {
        "DATA_BUCKET": BUCKET,
        "TARGET_BUCKET": BUCKET,
        "SOURCE_PREFIX": "incoming/",
        "TARGET_PREFIX": "compressed/",
        "EVENT_BUS_NAME": "{StudyEventBus}",
        "COMPRESSION_RATE": "100",
        "MEMORY_BUDGET_MB": "",
        "MIN_PSNR_DB": "40",
        "COLOUR_TRANSFORM": "false",
        "UID_ROOT": "",
        "LOG_LEVEL": "INFO",
        "POWERTOOLS_SERVICE_NAME": "dicom-compression",
        "POWERTOOLS_METRICS_NAMESPACE": "DicomCompression",
    }
    assert list(stack.of_type("AWS::Lambda::Function")) == ["WorkerLambdaFunction"]


def test_log_retention(stack: Stack) -> None:
    logs = stack.props("WorkerLogGroup")
    assert logs["LogGroupName"] == f"/aws/lambda/{STACK}-worker"
    assert logs["RetentionInDays"] == 30


def test_sqs_trigger_batch_size_one_with_partial_failures(stack: Stack) -> None:
    _, esm = only(stack.of_type("AWS::Lambda::EventSourceMapping"))
    props = stack.eval(esm["Properties"])
    assert props["EventSourceArn"] == "{StudyQueue.Arn}"
    assert props["FunctionName"] == "{WorkerLambdaFunction.Arn}"
    assert props["BatchSize"] == 1
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props.get("Enabled", True) is True
    reserved = stack.props("WorkerLambdaFunction")["ReservedConcurrentExecutions"]
    assert 2 <= props["ScalingConfig"]["MaximumConcurrency"] <= reserved


def test_log_group_kms_is_the_shared_key_option(templates: dict) -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert "KmsKeyId" not in Stack(templates["arm64"]).props("WorkerLogGroup")
    assert Stack(templates["arm64"], BucketKmsKeyArn=key).props("WorkerLogGroup")["KmsKeyId"] == key


# ------------------------------------------------------------------ queues
def test_study_queue_visibility_and_redrive(stack: Stack) -> None:
    queue = stack.props("StudyQueue")
    timeout = stack.props("WorkerLambdaFunction")["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["VisibilityTimeout"] <= 43200
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": "{StudyDeadLetterQueue.Arn}",
        "maxReceiveCount": 3,
    }
    assert queue["SqsManagedSseEnabled"] is True
    dlq = stack.props("StudyDeadLetterQueue")
    assert dlq["MessageRetentionPeriod"] == 1209600
    assert "RedrivePolicy" not in dlq


def test_study_queue_policy_admits_only_this_bucket(stack: Stack, template: dict) -> None:
    policy = stack.props("StudyQueuePolicy")
    assert policy["Queues"] == ["{StudyQueue}"]
    (st,) = policy["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Allow"
    assert st["Principal"] == {"Service": "s3.amazonaws.com"}
    assert st["Action"] in ("sqs:SendMessage", ["sqs:SendMessage"])
    assert st["Resource"] == "{StudyQueue.Arn}"
    assert st["Condition"] == {
        "ArnEquals": {"aws:SourceArn": BUCKET_ARN},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }
    # Built with CloudFormation (Fn::Sub), never with a Serverless ${aws:accountId} lookup.
    raw = template["Resources"]["StudyQueuePolicy"]["Properties"]["PolicyDocument"]
    assert raw["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Fn::Sub": "${AWS::AccountId}"}


# ------------------------------------------------------------------ bucket
def test_bucket_notifications_to_study_queue(stack: Stack, template: dict) -> None:
    bucket = stack.props("DataBucket")
    assert bucket["BucketName"] == BUCKET  # fixed name: no bucket <-> queue policy cycle
    depends = template["Resources"]["DataBucket"].get("DependsOn")
    assert "StudyQueuePolicy" in ([depends] if isinstance(depends, str) else depends)
    config = bucket["NotificationConfiguration"]
    assert set(config) == {"QueueConfigurations"}
    seen = set()
    for qc in config["QueueConfigurations"]:
        assert qc["Event"] == "s3:ObjectCreated:*"
        assert qc["Queue"] == "{StudyQueue.Arn}"
        rules = {r["Name"]: r["Value"] for r in qc["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == "incoming/"
        seen.add(rules["suffix"])
    assert seen == {"_READY", "manifest.json"}
    assert len(config["QueueConfigurations"]) == 2


def test_bucket_encryption_public_access_and_lifecycle(stack: Stack) -> None:
    bucket = stack.props("DataBucket")
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rules = bucket["LifecycleConfiguration"]["Rules"]
    abort = [r for r in rules if "AbortIncompleteMultipartUpload" in r]
    assert len(abort) == 1
    assert abort[0]["Status"] == "Enabled"
    assert abort[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in abort[0] and "Filter" not in abort[0]  # whole bucket
    # Decision documented in serverless.yml: no versioning on the working bucket.
    assert "VersioningConfiguration" not in bucket


def test_bucket_policy_denies_insecure_transport(stack: Stack) -> None:
    policy = stack.props("DataBucketPolicy")
    assert policy["Bucket"] == "{DataBucket}"
    statements = policy["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert len(deny) == 1
    (st,) = deny
    assert st["Principal"] == "*"
    assert st["Action"] in ("s3:*", ["s3:*"])
    assert sorted(st["Resource"]) == sorted(["{DataBucket.Arn}", "{DataBucket.Arn}/*"])
    assert st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert not [s for s in statements if s["Effect"] == "Allow"]


def test_kms_key_param_switches_to_sse_kms(templates: dict) -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = Stack(templates["arm64"], BucketKmsKeyArn=key)
    (sse,) = stack.props("DataBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert sse["BucketKeyEnabled"] is True
    assert stack.exists("WorkerKmsPolicy")
    assert not Stack(templates["arm64"]).exists("WorkerKmsPolicy")


def test_existing_bucket_param_creates_no_bucket(templates: dict) -> None:
    stack = Stack(templates["arm64"], ExistingBucketName="clinic-studies")
    assert not stack.exists("DataBucket")
    assert not stack.exists("DataBucketPolicy")
    env = stack.props("WorkerLambdaFunction")["Environment"]["Variables"]
    assert env["DATA_BUCKET"] == env["TARGET_BUCKET"] == "clinic-studies"
    (st,) = stack.props("StudyQueuePolicy")["PolicyDocument"]["Statement"]
    assert st["Condition"]["ArnEquals"] == {"aws:SourceArn": "arn:aws:s3:::clinic-studies"}
    assert stack.eval(stack.template["Outputs"]["DataBucketName"]["Value"]) == "clinic-studies"


def test_target_bucket_param(templates: dict) -> None:
    stack = Stack(templates["arm64"], TargetBucketOverride="clinic-outputs")
    env = stack.props("WorkerLambdaFunction")["Environment"]["Variables"]
    assert env["DATA_BUCKET"] == BUCKET
    assert env["TARGET_BUCKET"] == "clinic-outputs"


# ------------------------------------------------------------------ access logs
def test_data_bucket_access_log_goes_to_its_own_bucket(stack: Stack, template: dict) -> None:
    logging = stack.props("DataBucket")["LoggingConfiguration"]
    assert logging == {
        "DestinationBucketName": "{AccessLogBucket}",
        "LogFilePrefix": "s3-access/",
        "TargetObjectKeyFormat": {"PartitionedPrefix": {"PartitionDateSource": "EventTime"}},
    }
    depends = template["Resources"]["DataBucket"]["DependsOn"]
    assert "AccessLogBucketPolicy" in depends  # delivery is allowed before logging starts

    logs = stack.props("AccessLogBucket")
    (sse,) = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}  # S3 delivers logs to SSE-S3 only
    assert set(logs["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(logs["PublicAccessBlockConfiguration"]) == 4
    assert logs["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (rule,) = logs["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == 365
    assert "Prefix" not in rule and "Filter" not in rule  # every log file expires
    for attr in ("DeletionPolicy", "UpdateReplacePolicy"):
        assert template["Resources"]["AccessLogBucket"][attr] == "Retain"
    outputs = stack.template["Outputs"]
    assert stack.eval(outputs["AccessLogBucketName"]["Value"]) == "{AccessLogBucket}"


def test_access_log_bucket_admits_only_the_data_buckets_log_delivery(stack: Stack) -> None:
    policy = stack.props("AccessLogBucketPolicy")
    assert policy["Bucket"] == "{AccessLogBucket}"
    allow, deny = policy["PolicyDocument"]["Statement"]
    assert allow["Effect"] == "Allow"
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Action"] == "s3:PutObject"
    assert allow["Resource"] == "{AccessLogBucket.Arn}/s3-access/*"
    assert allow["Condition"] == {
        "ArnLike": {"aws:SourceArn": BUCKET_ARN},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert sorted(deny["Resource"]) == ["{AccessLogBucket.Arn}", "{AccessLogBucket.Arn}/*"]


def test_existing_bucket_has_no_access_log_bucket(templates: dict) -> None:
    """An existing bucket's logging is its owner's (README "Security")."""
    stack = Stack(templates["arm64"], ExistingBucketName="clinic-studies")
    assert not stack.exists("AccessLogBucket") and not stack.exists("AccessLogBucketPolicy")


# ------------------------------------------------------------------ events
def test_event_bus_and_rule_to_notification_queue(stack: Stack) -> None:
    assert stack.props("StudyEventBus")["Name"] == STACK
    rule = stack.props("StudyEventsToQueueRule")
    assert rule["EventBusName"] == "{StudyEventBus}"
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"]["source"] == ["dicom.compression"]
    assert set(rule["EventPattern"]["detail-type"]) == DETAIL_TYPES
    assert len(rule["EventPattern"]["detail-type"]) == 2
    (target,) = rule["Targets"]
    assert target["Arn"] == "{NotificationQueue.Arn}"

    policy = stack.props("NotificationQueuePolicy")
    assert policy["Queues"] == ["{NotificationQueue}"]
    (st,) = policy["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Allow"
    assert st["Principal"] == {"Service": "events.amazonaws.com"}
    assert st["Action"] in ("sqs:SendMessage", ["sqs:SendMessage"])
    assert st["Resource"] == "{NotificationQueue.Arn}"
    assert st["Condition"] == {"ArnEquals": {"aws:SourceArn": "{StudyEventsToQueueRule.Arn}"}}


def test_email_notifications_only_with_address(templates: dict) -> None:
    default = Stack(templates["arm64"])
    for rid in (
        "NotificationTopic",
        "NotificationEmailSubscription",
        "StudyEventsToEmailRule",
        "NotificationTopicPolicy",
    ):
        assert not default.exists(rid), rid
    assert not default.of_type("AWS::SNS::Topic")
    for alarm in default.of_type("AWS::CloudWatch::Alarm"):
        assert "AlarmActions" not in default.props(alarm)

    stack = Stack(templates["arm64"], NotificationEmail="ops@example.org")
    sub = stack.props("NotificationEmailSubscription")
    assert sub == {"TopicArn": "{NotificationTopic}", "Protocol": "email", "Endpoint": "ops@example.org"}
    rule = stack.props("StudyEventsToEmailRule")
    assert rule["EventBusName"] == "{StudyEventBus}"
    assert rule["EventPattern"]["source"] == ["dicom.compression"]
    assert set(rule["EventPattern"]["detail-type"]) == DETAIL_TYPES
    assert [t["Arn"] for t in rule["Targets"]] == ["{NotificationTopic}"]
    statements = stack.props("NotificationTopicPolicy")["PolicyDocument"]["Statement"]
    from_events = [s for s in statements if s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert from_events and from_events[0]["Condition"] == {
        "ArnEquals": {"aws:SourceArn": "{StudyEventsToEmailRule.Arn}"}
    }
    for alarm in stack.of_type("AWS::CloudWatch::Alarm"):
        assert stack.props(alarm)["AlarmActions"] == ["{NotificationTopic}"]


def test_notification_topic_is_encrypted_with_a_customer_managed_key(templates: dict) -> None:
    """EventBridge and CloudWatch alarms cannot publish to a topic under the AWS-managed
    alias/aws/sns key: without BucketKmsKeyArn the stack makes the topic a key of its own."""
    assert not Stack(templates["arm64"]).exists("NotificationTopicKey")
    stack = Stack(templates["arm64"], NotificationEmail="ops@example.org")
    assert stack.props("NotificationTopic")["KmsMasterKeyId"] == "{NotificationTopicKey.Arn}"
    key = stack.props("NotificationTopicKey")
    assert key["EnableKeyRotation"] is True
    statements = {st["Sid"]: st for st in key["KeyPolicy"]["Statement"]}
    assert {sid: st["Principal"] for sid, st in statements.items()} == {
        "AccountAdministersTheKey": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "StudyEventsRulePublishes": {"Service": "events.amazonaws.com"},
        "ThisAccountsAlarmsPublish": {"Service": "cloudwatch.amazonaws.com"},
    }
    for sid in ("StudyEventsRulePublishes", "ThisAccountsAlarmsPublish"):
        assert statements[sid]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert statements["ThisAccountsAlarmsPublish"]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert all(st["Effect"] == "Allow" for st in statements.values())

    shared = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = Stack(templates["arm64"], NotificationEmail="ops@example.org", BucketKmsKeyArn=shared)
    assert stack.props("NotificationTopic")["KmsMasterKeyId"] == shared
    assert not stack.exists("NotificationTopicKey")


# ------------------------------------------------------------------ alarms
def _alarm(stack: Stack, namespace: str, metric: str) -> dict:
    found = [
        p
        for p in (stack.props(a) for a in stack.of_type("AWS::CloudWatch::Alarm"))
        if p["Namespace"] == namespace and p["MetricName"] == metric
    ]
    assert len(found) == 1, f"{namespace}/{metric}: {found}"
    return found[0]


def test_dlq_alarm(stack: Stack) -> None:
    alarm = _alarm(stack, "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "{StudyDeadLetterQueue.QueueName}"}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["EvaluationPeriods"] == 1


def test_function_errors_alarm(stack: Stack) -> None:
    alarm = _alarm(stack, "AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": "{WorkerLambdaFunction}"}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0


# ------------------------------------------------------------------ outputs / config
def test_outputs(stack: Stack) -> None:
    outputs = {
        k: stack.eval(v["Value"])
        for k, v in stack.template["Outputs"].items()
        if "Condition" not in v or stack.conditions[v["Condition"]]
    }
    assert outputs["DataBucketName"] == BUCKET
    assert outputs["TargetBucketName"] == BUCKET
    assert outputs["StudyQueueUrl"] == "{StudyQueue}"
    assert outputs["StudyDeadLetterQueueUrl"] == "{StudyDeadLetterQueue}"
    assert outputs["NotificationQueueUrl"] == "{NotificationQueue}"
    assert outputs["EventBusName"] == "{StudyEventBus}"
    assert outputs["ClinicUploaderPolicyArn"] == "{ClinicUploaderPolicy}"  # Ref of a managed policy: its ARN


def test_template_has_the_expected_resources(stack: Stack) -> None:
    types = {rid: res["Type"] for rid, res in stack.resources.items()}
    expected = {
        "DataBucket": "AWS::S3::Bucket",
        "DataBucketPolicy": "AWS::S3::BucketPolicy",
        "StudyQueue": "AWS::SQS::Queue",
        "StudyDeadLetterQueue": "AWS::SQS::Queue",
        "StudyQueuePolicy": "AWS::SQS::QueuePolicy",
        "StudyEventBus": "AWS::Events::EventBus",
        "StudyEventsToQueueRule": "AWS::Events::Rule",
        "NotificationQueue": "AWS::SQS::Queue",
        "NotificationQueuePolicy": "AWS::SQS::QueuePolicy",
        "StudyDeadLetterQueueAlarm": "AWS::CloudWatch::Alarm",
        "WorkerErrorsAlarm": "AWS::CloudWatch::Alarm",
        "WorkerLambdaFunction": "AWS::Lambda::Function",
        "WorkerLogGroup": "AWS::Logs::LogGroup",
        "IamRoleLambdaExecution": "AWS::IAM::Role",
        "AccessLogBucket": "AWS::S3::Bucket",
        "AccessLogBucketPolicy": "AWS::S3::BucketPolicy",
        "ClinicUploaderPolicy": "AWS::IAM::ManagedPolicy",
    }
    for rid, rtype in expected.items():
        assert types.get(rid) == rtype, rid


def test_serverless_yml_uses_no_aws_calling_variables() -> None:
    """${aws:...}, ${ssm:...}, ${cf:...}, ${s3:...} would make packaging call AWS. An escaped
    \\${aws:PrincipalTag/clinic} is no variable: Serverless writes it out for IAM to resolve."""
    text = (REPO / "serverless.yml").read_text()
    code = "\n".join(line.split(" #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.findall(r"(?<!\\)\$\{(?:aws|ssm|cf|s3|secretsmanager)(?:\([^)]*\))?:", code)
    assert "\\${aws:PrincipalTag/clinic}" in code  # the escape the lookbehind lets through
