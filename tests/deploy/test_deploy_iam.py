"""The worker's role grants exactly the least-privilege (action, resource) pairs.

Every statement of the function role (its inline policies and any AWS::IAM::Policy attached
to it) is evaluated for real parameter values and expanded into (action, resource) pairs,
which must all be in the allowed list below. Serverless' own additions (the function's log
group, the SQS trigger) are allowed on exactly their resources; its X-Ray statement
(provider.tracing.lambda) is the only grant on "*", for exactly the two X-Ray actions that
have no resource-level permissions.
"""

from __future__ import annotations

import pytest

from tests.helpers.cloudformation import ACCOUNT, STACK, Stack, allowed_pairs

ROLE = "IamRoleLambdaExecution"
DATA_BUCKET = f"{STACK}-data-{ACCOUNT}-us-east-1"
LOG_GROUP_ARN = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/{STACK}"
OBJECT_WRITE_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
# X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions: "*"
# is the only possible resource, and these two are the only actions allowed on it.
XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")


def app_allowed(data_bucket: str, target_bucket: str) -> set[tuple[str, str]]:
    data, target = f"arn:aws:s3:::{data_bucket}", f"arn:aws:s3:::{target_bucket}"
    pairs = {("s3:GetObject", f"{data}/incoming/*")}
    pairs |= {(a, f"{target}/compressed/*") for a in OBJECT_WRITE_ACTIONS}
    # The study lock (<zip key>.lock): the only object the worker may delete.
    pairs |= {("s3:DeleteObject", f"{target}/compressed/*.lock")}
    pairs |= {("s3:ListBucket", data), ("s3:ListBucket", target)}
    pairs |= {("s3:ListBucketMultipartUploads", target)}
    pairs |= {("events:PutEvents", "{StudyEventBus.Arn}")}
    return pairs


def framework_allowed(action: str, resource: str) -> bool:
    """Statements Serverless adds for the function's logs, its SQS event source and X-Ray."""
    if action in ("logs:CreateLogStream", "logs:CreateLogGroup", "logs:TagResource"):
        return resource == f"{LOG_GROUP_ARN}*:*"
    if action == "logs:PutLogEvents":
        return resource == f"{LOG_GROUP_ARN}*:*:*"
    if action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        return resource == "{StudyQueue.Arn}"
    if action in XRAY_ACTIONS:
        return resource == "*"
    return False


def split(pairs: set[tuple[str, str]]) -> tuple[set, set]:
    framework = {p for p in pairs if p[0].split(":")[0] in ("logs", "sqs", "xray")}
    return pairs - framework, framework


def statements(stack: Stack) -> list[dict]:
    return list(stack.role_statements(ROLE))


VARIANTS = {
    "default": ({}, DATA_BUCKET, DATA_BUCKET),
    "existing-bucket": ({"ExistingBucketName": "clinic-studies"}, "clinic-studies", "clinic-studies"),
    "separate-target": ({"TargetBucketOverride": "clinic-outputs"}, DATA_BUCKET, "clinic-outputs"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_role_grants_exactly_the_allowed_pairs(templates, arch, variant) -> None:
    params, data_bucket, target_bucket = VARIANTS[variant]
    stack = Stack(templates[arch], **params)
    pairs = allowed_pairs(statements(stack))
    app, framework = split(pairs)
    assert app == app_allowed(data_bucket, target_bucket)
    assert framework, "Serverless' log/SQS statements are missing"
    bad = sorted(p for p in framework if not framework_allowed(*p))
    assert not bad, f"unexpected framework grants: {bad}"
    assert {p for p in framework if p[0].startswith("xray:")} == {(a, "*") for a in XRAY_ACTIONS}


def test_allowed_list_rejects_anything_else() -> None:
    """The comparison above is exact: one extra or widened grant would fail it."""
    base = app_allowed(DATA_BUCKET, DATA_BUCKET)
    data = f"arn:aws:s3:::{DATA_BUCKET}"
    for extra in [
        ("s3:DeleteObject", f"{data}/compressed/*"),
        ("s3:DeleteObject", f"{data}/incoming/*"),
        ("s3:DeleteObject", f"{data}/*.lock"),
        ("s3:PutObject", f"{data}/incoming/*"),
        ("s3:GetObject", f"{data}/*"),
    ]:
        assert extra not in base, extra  # so `app == app_allowed(...)` fails with it
    for action, resource in [
        ("xray:GetTraceSummaries", "*"),
        ("s3:GetObject", "*"),
        ("xray:PutTraceSegments", f"{data}/*"),
        ("sqs:SendMessage", "*"),
        ("logs:PutLogEvents", "*"),
    ]:
        assert not framework_allowed(action, resource), (action, resource)


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_no_wildcard_actions_or_resources(templates, arch) -> None:
    """No wildcard action anywhere; "*" as a resource only for exactly the two X-Ray actions,
    in a statement of its own (nothing else may ride along on "*")."""
    on_star = []
    for st in statements(Stack(templates[arch])):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in actions:
            assert "*" not in action, f"wildcard action {action}"
            assert action not in ("s3:*", "events:*")
        for resource in resources:
            if resource == "*":
                assert sorted(actions) == sorted(XRAY_ACTIONS), f"'*' resource for {actions}"
                assert "Condition" not in st
                on_star.extend(actions)
                continue
            assert "*" not in resource.split(":", 5)[-1].split("/", 1)[0], resource
            assert not resource.startswith("arn:aws:s3:::*"), resource
            if resource.startswith("arn:aws:s3:::") and "*" in resource:
                # object-level resources only under the two prefixes (locks: *.lock only)
                assert resource.endswith(("/incoming/*", "/compressed/*", "/compressed/*.lock")), resource
    assert sorted(on_star) == sorted(XRAY_ACTIONS), on_star


def test_s3_object_actions_only_under_their_prefixes(templates) -> None:
    pairs = allowed_pairs(statements(Stack(templates["arm64"])))
    for action, resource in pairs:
        if action == "s3:GetObject":
            assert resource.endswith(("/incoming/*", "/compressed/*")), resource
        elif action in OBJECT_WRITE_ACTIONS:
            assert resource.endswith("/compressed/*"), (action, resource)
    assert ("s3:PutObject", f"arn:aws:s3:::{DATA_BUCKET}/incoming/*") not in pairs
    deletes = {p for p in pairs if p[0] in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:DeleteObjects")}
    assert deletes == {("s3:DeleteObject", f"arn:aws:s3:::{DATA_BUCKET}/compressed/*.lock")}


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("compressed/clinic-7/study-001.zip.lock", True),
        ("compressed/clinic-7/2025-08-27/study-001/out.zip.lock", True),
        ("compressed/clinic-7/study-001.zip", False),
        ("compressed/clinic-7/study-001.result.json", False),
        ("incoming/clinic-7/study-001/x.lock", False),
        ("incoming/clinic-7/study-001/CT1/0001.dcm", False),
    ],
)
def test_delete_object_matches_only_lock_keys(templates, key: str, allowed: bool) -> None:
    """IAM resource matching ('*' spans '/'): the worker's lock key is deletable, no output or
    input is."""
    import fnmatch

    pairs = allowed_pairs(statements(Stack(templates["arm64"])))
    arn = f"arn:aws:s3:::{DATA_BUCKET}/{key}"
    # IAM wildcards: '*' any run of characters (incl. '/'), '?' one; nothing else is special.
    matches = [r for a, r in pairs if a == "s3:DeleteObject" and fnmatch.fnmatchcase(arn, r.replace("[", "[[]"))]
    assert bool(matches) is allowed, (key, matches)


def test_put_events_only_on_this_bus(templates) -> None:
    pairs = allowed_pairs(statements(Stack(templates["arm64"])))
    events = {p for p in pairs if p[0].startswith("events:")}
    assert events == {("events:PutEvents", "{StudyEventBus.Arn}")}


def test_list_bucket_is_limited_to_the_two_prefixes(templates) -> None:
    listing = [
        s
        for s in statements(Stack(templates["arm64"]))
        if "s3:ListBucket" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert len(listing) == 1
    (st,) = listing
    assert st["Action"] in ("s3:ListBucket", ["s3:ListBucket"])
    assert st.get("Condition") == {"StringLike": {"s3:prefix": ["incoming/*", "compressed/*"]}}


def test_list_multipart_uploads_is_bucket_level_without_prefix_condition(templates) -> None:
    """IAM has no key-prefix condition for ListBucketMultipartUploads (s3:prefix applies to
    ListBucket/ListBucketVersions only): a condition there would silently deny every call."""
    (st,) = [s for s in statements(Stack(templates["arm64"])) if "s3:ListBucketMultipartUploads" in s["Action"]]
    assert st["Action"] == ["s3:ListBucketMultipartUploads"]
    assert st["Resource"] == [f"arn:aws:s3:::{DATA_BUCKET}"]
    assert "Condition" not in st


def test_kms_grants_only_with_kms_key_and_only_via_s3(templates) -> None:
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert not [s for s in statements(Stack(templates["arm64"])) if any(a.startswith("kms:") for a in s["Action"])]
    kms = [
        s
        for s in statements(Stack(templates["arm64"], BucketKmsKeyArn=key))
        if any(a.startswith("kms:") for a in s["Action"])
    ]
    (st,) = kms
    assert sorted(st["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert st["Resource"] == key
    assert st["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}


def test_role_trust_and_no_managed_policies(templates) -> None:
    role = Stack(templates["arm64"]).props(ROLE)
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": ["lambda.amazonaws.com"]}
    assert trust["Action"] == ["sts:AssumeRole"]
    assert not role.get("ManagedPolicyArns")
    assert "PermissionsBoundary" not in role
