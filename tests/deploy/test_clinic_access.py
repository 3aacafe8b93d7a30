"""Each clinic reaches only its own studies: the ClinicUploaderPolicy, three ways.

(a) On the template: every statement, evaluated for real parameter values, is expanded into
    (action, resource) pairs that must equal the allow-list below, and every condition must
    be exactly the tag guard and, for listing, the clinic's own prefix.
(b) With moto's IAM enforcement (``enable_iam_authentication``: INITIAL_NO_AUTH_ACTION_COUNT
    = 0, so every request is signed-checked and authorised). moto matches actions and
    resources, but it does not evaluate policy variables (``${aws:PrincipalTag/clinic}`` is
    matched literally and so denies everything: checked below), nor any condition but
    StringEquals, and it gives S3 requests no ``s3:prefix``. So the policy is instantiated for
    one clinic id, as IAM does on each request of a principal tagged clinic=<id>, and
    attached to that clinic's IAM user; moto then enforces buckets, prefixes and actions.
(c) What moto cannot: which prefixes a clinic may list, and the tag guard. A small
    evaluator of this policy's condition operators (StringLike / StringNotLike with IAM's
    ``*`` and ``?``, policy variables from the principal's tags) decides those cases.

Presigned URLs fail under moto's enforcement (they carry no Authorization header), so
presigned uploads are tested through the local stack without it (tests/e2e/test_presign.py).
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any

import boto3
import pytest

from tests.helpers.cloudformation import ACCOUNT, STACK, Stack, allowed_pairs

POLICY = "ClinicUploaderPolicy"
TAG = "${aws:PrincipalTag/clinic}"
DATA_BUCKET = f"{STACK}-data-{ACCOUNT}-us-east-1"
KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
UPLOAD_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
TAG_GUARD = {"StringLike": {"aws:PrincipalTag/clinic": "?*"}, "StringNotLike": {"aws:PrincipalTag/clinic": "*/*"}}


def statements(stack: Stack) -> list[dict]:
    return stack.props(POLICY)["PolicyDocument"]["Statement"]


# ------------------------------------------------------------------ (a) the template
def clinic_allowed(data_bucket: str, target_bucket: str, kms_key: str | None = None) -> set[tuple[str, str]]:
    data, target = f"arn:aws:s3:::{data_bucket}", f"arn:aws:s3:::{target_bucket}"
    pairs = {(a, f"{data}/incoming/{TAG}/*") for a in UPLOAD_ACTIONS}
    pairs |= {("s3:GetObject", f"{target}/compressed/{TAG}/*")}
    pairs |= {("s3:ListBucket", data), ("s3:ListBucket", target)}
    if kms_key:
        pairs |= {("kms:Decrypt", kms_key), ("kms:GenerateDataKey", kms_key)}
    return pairs


VARIANTS = {
    "default": ({}, DATA_BUCKET, DATA_BUCKET, None),
    "existing-bucket": ({"ExistingBucketName": "clinic-studies"}, "clinic-studies", "clinic-studies", None),
    "separate-target": ({"TargetBucketOverride": "clinic-outputs"}, DATA_BUCKET, "clinic-outputs", None),
    "kms": ({"BucketKmsKeyArn": KMS_KEY}, DATA_BUCKET, DATA_BUCKET, KMS_KEY),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_policy_grants_exactly_the_allowed_pairs(templates, arch: str, variant: str) -> None:
    params, data_bucket, target_bucket, kms_key = VARIANTS[variant]
    sts = statements(Stack(templates[arch], **params))
    assert allowed_pairs(sts) == clinic_allowed(data_bucket, target_bucket, kms_key)
    assert all(st["Effect"] == "Allow" for st in sts)


def test_allowed_list_rejects_anything_else() -> None:
    """The comparison above is exact: a widened or extra grant is not in the list."""
    base = clinic_allowed(DATA_BUCKET, DATA_BUCKET)
    data = f"arn:aws:s3:::{DATA_BUCKET}"
    for extra in [
        ("s3:GetObject", f"{data}/incoming/{TAG}/*"),
        ("s3:PutObject", f"{data}/compressed/{TAG}/*"),
        ("s3:PutObject", f"{data}/incoming/*"),
        ("s3:GetObject", f"{data}/compressed/*"),
        ("s3:DeleteObject", f"{data}/incoming/{TAG}/*"),
        ("s3:ListBucketMultipartUploads", data),
    ]:
        assert extra not in base, extra


@pytest.mark.parametrize("variant", ["default", "separate-target"])
def test_every_statement_requires_the_tag_and_listing_only_the_clinics_prefixes(templates, variant: str) -> None:
    params, data_bucket, target_bucket, _ = VARIANTS[variant]
    by_sid = {st["Sid"]: st for st in statements(Stack(templates["arm64"], **params))}
    assert set(by_sid) == {"UploadOwnStudies", "ReadOwnOutputs", "ListOwnStudies", "ListOwnOutputs"}
    for sid in ("UploadOwnStudies", "ReadOwnOutputs"):
        assert by_sid[sid]["Condition"] == TAG_GUARD, sid
    for sid, bucket, prefix in [
        ("ListOwnStudies", data_bucket, "incoming/"),
        ("ListOwnOutputs", target_bucket, "compressed/"),
    ]:
        st = by_sid[sid]
        assert st["Resource"] == f"arn:aws:s3:::{bucket}"
        assert st["Condition"] == {
            "StringLike": {"aws:PrincipalTag/clinic": "?*", "s3:prefix": f"{prefix}{TAG}/*"},
            "StringNotLike": {"aws:PrincipalTag/clinic": "*/*"},
        }


def test_kms_only_with_the_key_and_only_through_s3(templates) -> None:
    (st,) = [
        s for s in statements(Stack(templates["arm64"], BucketKmsKeyArn=KMS_KEY)) if s["Sid"] == "UseBucketKeyViaS3"
    ]
    assert st["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}


def test_policy_arn_is_an_output(templates) -> None:
    stack = Stack(templates["arm64"])
    assert stack.eval(stack.template["Outputs"]["ClinicUploaderPolicyArn"]["Value"]) == "{ClinicUploaderPolicy}"
    assert stack.props(POLICY)["ManagedPolicyName"] == f"{STACK}-clinic-uploader"


@pytest.mark.parametrize(
    "study_path, manifest",
    [
        ("clinic-a/study-1", None),
        ("clinic-a/2025-08-27/study-1", None),
        ("clinic-a/study-1", b'{"outputFilename": "renamed.zip"}'),
    ],
)
def test_a_clinics_outputs_land_under_its_own_prefix(study_path: str, manifest: bytes | None) -> None:
    """The worker's output layout is what the policy lets the clinic read (a study is a
    folder inside the clinic's folder; presign refuses the clinic's folder itself)."""
    from pipeline.job.config import ServiceConfig
    from pipeline.job.plan import output_keys
    from pipeline.study.manifest import parse_manifest

    cfg = ServiceConfig.from_env({"DATA_BUCKET": DATA_BUCKET})
    for key in output_keys(cfg, study_path, parse_manifest(manifest) if manifest else None):
        assert fnmatch.fnmatchcase(key, "compressed/clinic-a/*"), key


# ------------------------------------------------------------------ (b) moto's enforcement
def instantiate(document: dict, clinic: str) -> dict:
    """The policy as IAM applies it to a principal tagged clinic=<clinic>."""
    return json.loads(json.dumps(document).replace(TAG, clinic))


class ClinicAws:
    """mock_aws with the data bucket, and one IAM user per clinic holding the policy."""

    def __init__(self, document: dict) -> None:
        self.admin = boto3.client("s3", region_name="us-east-1")
        self.admin.create_bucket(Bucket=DATA_BUCKET)
        self.iam = boto3.client("iam", region_name="us-east-1")
        self.document = document

    def user(self, name: str, document: dict | None, tags: dict[str, str]) -> Any:
        """An S3 client signed with the access key of a new user holding ``document``."""
        self.iam.create_user(UserName=name, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        if document is not None:
            arn = self.iam.create_policy(PolicyName=f"{name}-uploader", PolicyDocument=json.dumps(document))["Policy"][
                "Arn"
            ]
            self.iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )

    def clinic(self, clinic: str) -> Any:
        return self.user(clinic, instantiate(self.document, clinic), {"clinic": clinic})


@pytest.fixture
def aws(templates, monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    document = Stack(templates["arm64"]).props(POLICY)["PolicyDocument"]
    with mock_aws():
        yield ClinicAws(document)


def denied(call: Any, **kwargs: Any) -> bool:
    from botocore.exceptions import ClientError

    try:
        call(**kwargs)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("AccessDenied", "403"), exc.response["Error"]  # 403: HEAD has no body
        return True
    return False


def test_clinic_uploads_a_study_and_reads_only_its_own_outputs(aws: ClinicAws) -> None:
    from moto.core import enable_iam_authentication

    from pipeline.job.config import ServiceConfig
    from pipeline.job.plan import output_keys

    a, b = aws.clinic("clinic-a"), aws.clinic("clinic-b")
    cfg = ServiceConfig.from_env({"DATA_BUCKET": DATA_BUCKET})
    a_zip, a_record = output_keys(cfg, "clinic-a/study-1", None)
    b_zip, _ = output_keys(cfg, "clinic-b/study-9", None)
    study = "incoming/clinic-a/study-1/"
    part = b"\0" * (5 * 1024 * 1024)

    with enable_iam_authentication():
        # Clinic A uploads its study: plain PUTs, a multipart upload, one it aborts, the marker.
        a.put_object(Bucket=DATA_BUCKET, Key=study + "CT1/0001.dcm", Body=b"DICM-1")
        upload = a.create_multipart_upload(Bucket=DATA_BUCKET, Key=study + "CT1/0002.dcm")["UploadId"]
        etag = a.upload_part(Bucket=DATA_BUCKET, Key=study + "CT1/0002.dcm", UploadId=upload, PartNumber=1, Body=part)[
            "ETag"
        ]
        assert len(a.list_parts(Bucket=DATA_BUCKET, Key=study + "CT1/0002.dcm", UploadId=upload)["Parts"]) == 1
        a.complete_multipart_upload(
            Bucket=DATA_BUCKET,
            Key=study + "CT1/0002.dcm",
            UploadId=upload,
            MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]},
        )
        dropped = a.create_multipart_upload(Bucket=DATA_BUCKET, Key=study + "CT1/0003.dcm")["UploadId"]
        a.abort_multipart_upload(Bucket=DATA_BUCKET, Key=study + "CT1/0003.dcm", UploadId=dropped)
        a.put_object(Bucket=DATA_BUCKET, Key=study + "manifest.json", Body=b"{}")
        assert [o["Key"] for o in a.list_objects_v2(Bucket=DATA_BUCKET, Prefix=study)["Contents"]] == [
            study + "CT1/0001.dcm",
            study + "CT1/0002.dcm",
            study + "manifest.json",
        ]

    # The worker (its own role: test_deploy_iam.py) writes both clinics' outputs.
    for key in (a_zip, a_record, b_zip):
        aws.admin.put_object(Bucket=DATA_BUCKET, Key=key, Body=b"PK-" + key.encode())

    with enable_iam_authentication():
        assert a.get_object(Bucket=DATA_BUCKET, Key=a_zip)["Body"].read() == b"PK-" + a_zip.encode()
        assert a.head_object(Bucket=DATA_BUCKET, Key=a_record)["ContentLength"] > 0
        assert a.list_objects_v2(Bucket=DATA_BUCKET, Prefix="compressed/clinic-a/")["KeyCount"] == 2
        assert b.get_object(Bucket=DATA_BUCKET, Key=b_zip)["Body"].read() == b"PK-" + b_zip.encode()

        bucket = {"Bucket": DATA_BUCKET}
        # Not B's outputs, nor anything of B's; not compressed/ for writing; not incoming/ for reading.
        assert denied(a.get_object, **bucket, Key=b_zip)
        assert denied(a.head_object, **bucket, Key=b_zip)
        assert denied(a.put_object, **bucket, Key="compressed/clinic-a/study-1.zip", Body=b"forged")
        assert denied(a.put_object, **bucket, Key="compressed/clinic-b/study-9.zip", Body=b"forged")
        assert denied(a.put_object, **bucket, Key="incoming/clinic-b/study-2/manifest.json", Body=b"{}")
        assert denied(a.create_multipart_upload, **bucket, Key="incoming/clinic-b/study-2/CT1/0001.dcm")
        assert denied(a.put_object, **bucket, Key="incoming/study-at-the-top/_READY", Body=b"")
        assert denied(a.get_object, **bucket, Key=study + "CT1/0001.dcm")
        assert denied(b.get_object, **bucket, Key=a_zip)
        # Nothing else: no deletes, no in-progress upload listing, no bucket settings.
        assert denied(a.delete_object, **bucket, Key=study + "CT1/0001.dcm")
        assert denied(a.delete_object, **bucket, Key=a_zip)
        assert denied(a.list_multipart_uploads, **bucket)
        assert denied(a.get_bucket_policy, **bucket)
        assert denied(a.put_bucket_policy, **bucket, Policy="{}")
        assert denied(a.list_buckets)
    # The outputs are untouched.
    assert aws.admin.get_object(Bucket=DATA_BUCKET, Key=a_zip)["Body"].read() == b"PK-" + a_zip.encode()


def test_moto_enforces_and_does_not_resolve_policy_variables(aws: ClinicAws) -> None:
    """Why the policy is instantiated for moto: held as written, moto matches the variable
    literally and denies the clinic's own upload; a user without the policy is denied too."""
    from moto.core import enable_iam_authentication

    literal = aws.user("clinic-c", aws.document, {"clinic": "clinic-c"})
    nobody = aws.user("no-policy", None, {"clinic": "clinic-d"})
    with enable_iam_authentication():
        assert denied(literal.put_object, Bucket=DATA_BUCKET, Key="incoming/clinic-c/s/_READY", Body=b"")
        assert denied(nobody.put_object, Bucket=DATA_BUCKET, Key="incoming/clinic-d/s/_READY", Body=b"")


# ------------------------------------------------------------------ (c) conditions, as IAM evaluates them
def _like(pattern: str, value: str) -> bool:
    """IAM's StringLike: '*' any run (also '/'), '?' one character, nothing else special."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def iam_allows(sts: list[dict], action: str, resource: str, tags: dict[str, str], context: dict[str, str]) -> bool:
    """Whether one Allow statement matches: actions, resources, policy variables from the
    principal's tags (a missing tag matches nothing), StringLike / StringNotLike."""

    def resolve(text: str) -> str | None:
        if TAG in text:
            return text.replace(TAG, tags["clinic"]) if "clinic" in tags else None
        return text

    for st in sts:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if action not in actions:
            continue
        if not any(r is not None and _like(r, resource) for r in map(resolve, resources)):
            continue
        values = {**context, **{f"aws:PrincipalTag/{k}": v for k, v in tags.items()}}
        ok = True
        for op, conditions in st.get("Condition", {}).items():
            assert op in ("StringLike", "StringNotLike"), op  # the operators this policy uses
            for key, patterns in conditions.items():
                patterns = [resolve(p) for p in (patterns if isinstance(patterns, list) else [patterns])]
                present = key in values
                match = present and any(p is not None and _like(p, values[key]) for p in patterns)
                ok &= match if op == "StringLike" else (not present or not match)
        if ok:
            return True
    return False


BUCKET_ARN = f"arn:aws:s3:::{DATA_BUCKET}"
A = {"clinic": "clinic-a"}


@pytest.mark.parametrize(
    "prefix, allowed",
    [
        ("incoming/clinic-a/", True),
        ("incoming/clinic-a/study-1/", True),
        ("compressed/clinic-a/", True),
        ("incoming/clinic-b/", False),
        ("compressed/clinic-b/", False),
        ("incoming/clinic-ab/", False),
        ("incoming/clinic-a", False),
        ("incoming/", False),
        ("compressed/", False),
        ("", False),
        (None, False),  # no prefix at all: the whole bucket
    ],
)
def test_listing_only_the_clinics_own_prefixes(templates, prefix: str | None, allowed: bool) -> None:
    sts = statements(Stack(templates["arm64"]))
    context = {} if prefix is None else {"s3:prefix": prefix}
    assert iam_allows(sts, "s3:ListBucket", BUCKET_ARN, A, context) is allowed


@pytest.mark.parametrize(
    "tags, allowed",
    [
        ({"clinic": "clinic-a"}, True),
        ({}, False),  # untagged principal: nothing
        ({"clinic": ""}, False),  # empty tag: it would name incoming//
        ({"clinic": "clinic-a/x"}, False),  # a '/' would reach into (or above) another folder
        ({"team": "clinic-a"}, False),
    ],
)
def test_the_tag_guard(templates, tags: dict[str, str], allowed: bool) -> None:
    sts = statements(Stack(templates["arm64"]))
    key = f"{BUCKET_ARN}/incoming/{tags.get('clinic', 'clinic-a')}/study-1/_READY"
    assert iam_allows(sts, "s3:PutObject", key, tags, {}) is allowed
    prefix = f"incoming/{tags.get('clinic', 'clinic-a')}/"
    assert iam_allows(sts, "s3:ListBucket", BUCKET_ARN, tags, {"s3:prefix": prefix}) is allowed


@pytest.mark.parametrize(
    "action, key, allowed",
    [
        ("s3:PutObject", "incoming/clinic-a/study-1/CT1/0001.dcm", True),
        ("s3:PutObject", "incoming/clinic-b/study-1/CT1/0001.dcm", False),
        ("s3:PutObject", "incoming/clinic-ab/study-1/_READY", False),
        ("s3:PutObject", "compressed/clinic-a/study-1.zip", False),
        ("s3:GetObject", "compressed/clinic-a/study-1.zip", True),
        ("s3:GetObject", "compressed/clinic-b/study-1.zip", False),
        ("s3:GetObject", "incoming/clinic-a/study-1/CT1/0001.dcm", False),
    ],
)
def test_object_access_by_key(templates, action: str, key: str, allowed: bool) -> None:
    sts = statements(Stack(templates["arm64"]))
    assert iam_allows(sts, action, f"{BUCKET_ARN}/{key}", A, {}) is allowed
