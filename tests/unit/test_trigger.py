"""``parse_body``: S3 notifications (as S3, moto and SNS deliver them through SQS) -> triggers.

Bodies are built the way S3 builds them: ``Records[]`` with ``eventSource: aws:s3``, the key
``quote_plus``-encoded (``+`` for a space, ``%XX`` for UTF-8 bytes and, as moto does, ``%2F``
for ``/``).
"""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.trigger.events import MAX_BODY_BYTES, Dropped, StudyTrigger, parse_body
from tests.helpers.aws import s3_notification

BUCKET = "dicom-data"
PREFIX = "incoming/"


def parse(body: object, *, bucket: str = BUCKET, prefix: str = PREFIX) -> list[StudyTrigger | Dropped]:
    return parse_body(body if isinstance(body, str) else json.dumps(body), bucket=bucket, source_prefix=prefix)


def one(body: object, **kw: str) -> StudyTrigger | Dropped:
    items = parse(body, **kw)
    assert len(items) == 1, items
    return items[0]


def dropped(body: object, **kw: str) -> str:
    item = one(body, **kw)
    assert isinstance(item, Dropped), item
    return item.reason


# --------------------------------------------------------------------------- triggers


def test_ready_marker_in_nested_study() -> None:
    item = one(s3_notification(BUCKET, "incoming/clinic-7/2025-08-27/ct-nested-001/_READY", size=0))
    assert item == StudyTrigger(
        bucket=BUCKET,
        key="incoming/clinic-7/2025-08-27/ct-nested-001/_READY",
        event_name="ObjectCreated:Put",
        event_time="2025-08-27T10:00:00.000Z",
        size=0,
    )
    assert item.marker == "_READY"
    assert item.study_prefix == "incoming/clinic-7/2025-08-27/ct-nested-001/"


def test_manifest_marker() -> None:
    item = one(s3_notification(BUCKET, "incoming/study-1/manifest.json", size=812))
    assert isinstance(item, StudyTrigger)
    assert (item.marker, item.study_prefix, item.size) == ("manifest.json", "incoming/study-1/", 812)


def test_key_with_spaces_and_non_ascii_is_decoded() -> None:
    key = "incoming/Clinic Zürich/étude 1/_READY"
    body = s3_notification(BUCKET, key)
    raw = body["Records"][0]["s3"]["object"]["key"]
    # What S3/moto put on the wire: '+' for spaces, UTF-8 percent-escapes, '/' as %2F.
    assert raw == "incoming%2FClinic+Z%C3%BCrich%2F%C3%A9tude+1%2F_READY"
    item = one(body)
    assert isinstance(item, StudyTrigger)
    assert item.key == key
    assert item.study_prefix == "incoming/Clinic Zürich/étude 1/"


def test_key_with_slashes_left_unencoded_is_decoded_too() -> None:
    # Real S3 keeps '/' as is; only moto encodes it.
    raw = quote_plus("incoming/Clinic Zürich/a+b/_READY", safe="/")
    assert raw == "incoming/Clinic+Z%C3%BCrich/a%2Bb/_READY"
    body = s3_notification(BUCKET, "x")
    body["Records"][0]["s3"]["object"]["key"] = raw
    item = one(body)
    assert isinstance(item, StudyTrigger)
    assert item.key == "incoming/Clinic Zürich/a+b/_READY"  # a literal '+' arrives as %2B


def test_literal_percent_and_plus_in_key() -> None:
    key = "incoming/100% done+more/_READY"
    item = one(s3_notification(BUCKET, key))
    assert isinstance(item, StudyTrigger) and item.key == key


def test_other_object_created_event_names_are_triggers() -> None:
    for name in ("ObjectCreated:Copy", "ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Post"):
        item = one(s3_notification(BUCKET, "incoming/s/_READY", event_name=name))
        assert isinstance(item, StudyTrigger) and item.event_name == name


def test_several_records_each_parsed() -> None:
    a = s3_notification(BUCKET, "incoming/a/_READY")
    b = s3_notification(BUCKET, "incoming/b/x.dcm")
    c = s3_notification(BUCKET, "incoming/c/manifest.json")
    body = {"Records": a["Records"] + b["Records"] + c["Records"]}
    items = parse(body)
    assert [type(i) for i in items] == [StudyTrigger, Dropped, StudyTrigger]
    assert [i.study_prefix for i in items if isinstance(i, StudyTrigger)] == ["incoming/a/", "incoming/c/"]


def test_sns_wrapped_notification() -> None:
    inner = s3_notification(BUCKET, "incoming/Clinic Zürich/étude 1/manifest.json")
    body = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:study-markers",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(inner),
        "Timestamp": "2025-08-27T10:00:00.000Z",
        "SignatureVersion": "1",
    }
    item = one(body)
    assert isinstance(item, StudyTrigger)
    assert item.key == "incoming/Clinic Zürich/étude 1/manifest.json"


def test_custom_source_prefix() -> None:
    item = one(s3_notification(BUCKET, "uploads/dicom/s1/_READY"), prefix="uploads/dicom/")
    assert isinstance(item, StudyTrigger) and item.study_prefix == "uploads/dicom/s1/"
    assert "outside" in dropped(s3_notification(BUCKET, "incoming/s1/_READY"), prefix="uploads/dicom/")


# --------------------------------------------------------------------------- dropped


def test_s3_test_event() -> None:
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2025-08-27T10:00:00.000Z", "Bucket": BUCKET}
    assert "TestEvent" in dropped(body)


def test_sns_wrapped_test_event() -> None:
    body = {"Type": "Notification", "Message": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})}
    assert "TestEvent" in dropped(body)


@pytest.mark.parametrize("body", ["", "not json", "{", "{'Records': []}", "\x00\xff", "\ud800"])
def test_not_json(body: str) -> None:
    assert dropped(body) == "message body is not JSON"


@pytest.mark.parametrize("body", ["[]", '[{"Records": []}]', "42", '"Records"', "null", "true"])
def test_json_but_not_an_object(body: str) -> None:
    assert dropped(body) == "message body is not a JSON object"


@pytest.mark.parametrize(
    "body", [{}, {"Records": []}, {"Records": {}}, {"Records": "x"}, {"Type": "Notification", "Message": 3}]
)
def test_object_but_not_a_notification(body: object) -> None:
    assert dropped(body) == "not an S3 event notification"


def test_too_large_body() -> None:
    assert "larger" in dropped("x" * (MAX_BODY_BYTES + 1))


def test_deep_nesting_is_not_json() -> None:
    assert dropped("[" * 100_000 + "]" * 100_000) == "message body is not JSON"


def test_other_bucket() -> None:
    assert dropped(s3_notification("someone-elses-bucket", "incoming/s/_READY")) == "event for another bucket"


@pytest.mark.parametrize(
    "key", ["compressed/s/_READY", "incoming", "incoming/", "incomingx/s/_READY", "s/incoming/_READY"]
)
def test_key_outside_prefix(key: str) -> None:
    assert dropped(s3_notification(BUCKET, key)) == "key outside the source prefix"


@pytest.mark.parametrize(
    "key",
    [
        "incoming/s/CT1/01.dcm",
        "incoming/s/READY",
        "incoming/s/_READY.txt",
        "incoming/s/manifest.json.bak",
        "incoming/s/_ready",
        "incoming/s/",
    ],
)
def test_not_a_marker(key: str) -> None:
    assert dropped(s3_notification(BUCKET, key)) == "object is not a study marker"


@pytest.mark.parametrize("key", ["incoming/_READY", "incoming/manifest.json"])
def test_marker_directly_under_prefix(key: str) -> None:
    assert "directly under the source prefix" in dropped(s3_notification(BUCKET, key))


@pytest.mark.parametrize(
    "key",
    [
        "incoming/../_READY",
        "incoming/a/../_READY",
        "incoming/../compressed/x/_READY",
        "incoming/./s/_READY",
        "incoming/a//b/_READY",
        "incoming//a/_READY",
        "incoming/a/./_READY",
        "incoming/../../etc/_READY",
    ],
)
def test_dot_dot_and_empty_segments(key: str) -> None:
    reason = dropped(s3_notification(BUCKET, key))
    assert reason in (
        "marker key has empty, '.' or '..' path segments",
        "marker directly under the source prefix: a study needs its own folder",
    ), reason


def test_encoded_dot_dot_is_decoded_then_refused() -> None:
    body = s3_notification(BUCKET, "x")
    body["Records"][0]["s3"]["object"]["key"] = "incoming/a/%2E%2E/_READY"
    assert "'..'" in dropped(body)


@pytest.mark.parametrize(
    "name",
    [
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectRestore:Completed",
        "LifecycleExpiration:Delete",
        "",
    ],
)
def test_not_object_created(name: str) -> None:
    assert dropped(s3_notification(BUCKET, "incoming/s/_READY", event_name=name)).startswith(
        "not an object-created event"
    )


def test_record_not_from_s3() -> None:
    body = s3_notification(BUCKET, "incoming/s/_READY")
    body["Records"][0]["eventSource"] = "aws:sqs"
    assert dropped(body) == "record is not from S3"
    assert dropped({"Records": ["x"]}) == "record is not from S3"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("s3"),
        lambda r: r["s3"].pop("object"),
        lambda r: r["s3"].update(bucket="b"),
        lambda r: r["s3"]["object"].pop("key"),
        lambda r: r["s3"]["object"].update(key=5),
        lambda r: r["s3"]["bucket"].update(name=None),
    ],
)
def test_malformed_s3_record(mutate) -> None:
    body = s3_notification(BUCKET, "incoming/s/_READY")
    mutate(body["Records"][0])
    assert "S3 record without" in dropped(body)


def test_odd_optional_fields_do_not_break_a_trigger() -> None:
    body = s3_notification(BUCKET, "incoming/s/_READY")
    body["Records"][0]["eventTime"] = 17
    body["Records"][0]["s3"]["object"]["size"] = "12"
    item = one(body)
    assert isinstance(item, StudyTrigger) and item.event_time is None and item.size is None


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
@example(
    '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "dicom-data"}, "object": {"key": null}}}]}'
)
@example('{"Type": "Notification", "Message": "{\\"Records\\": [1, null, {}]}"}')
@example('{"Records": [{"eventSource": "aws:s3", "eventName": [[[[]]]]}]}')
@example("\ud800")
def test_parse_body_never_raises_on_text(body: str) -> None:
    items = parse_body(body, bucket=BUCKET, source_prefix=PREFIX)
    assert isinstance(items, list) and items
    assert all(isinstance(i, (StudyTrigger, Dropped)) for i in items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "eventSource": st.sampled_from(["aws:s3", "aws:sqs"]) | json_values,
        "eventName": st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete"]) | json_values,
        "eventTime": json_values,
        "s3": st.fixed_dictionaries(
            {},
            optional={
                "bucket": st.fixed_dictionaries({}, optional={"name": st.just(BUCKET) | json_values}) | json_values,
                "object": st.fixed_dictionaries(
                    {},
                    optional={
                        "key": st.sampled_from(["incoming/a/_READY", "incoming%2Fa%2F_READY", "incoming/_READY"])
                        | st.text(max_size=30)
                        | json_values,
                        "size": json_values,
                    },
                )
                | json_values,
            },
        )
        | json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"Records": st.lists(record_like | json_values, max_size=4)}),
        st.fixed_dictionaries({"Type": st.just("Notification"), "Message": json_values.map(json.dumps)}),
    )
)
def test_parse_body_never_raises_on_notification_like_json(doc: object) -> None:
    items = parse_body(json.dumps(doc), bucket=BUCKET, source_prefix=PREFIX)
    assert isinstance(items, list) and items
    assert all(isinstance(i, (StudyTrigger, Dropped)) for i in items)


study_paths = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60)


@settings(max_examples=300)
@given(study_paths, st.sampled_from(["_READY", "manifest.json"]), st.booleans())
@example("Clinic Zürich/étude 1", "_READY", True)
@example("a+b/100%/x y", "_READY", False)
@example("..", "_READY", True)
@example("a/../b", "_READY", True)
@example("/a", "_READY", True)
@example("a/", "_READY", True)
def test_encoded_marker_key_round_trips(path: str, marker: str, moto_style: bool) -> None:
    key = f"{PREFIX}{path}/{marker}"
    raw = quote_plus(key) if moto_style else quote_plus(key, safe="/")
    body = s3_notification(BUCKET, "x")
    body["Records"][0]["s3"]["object"]["key"] = raw
    item = one(body)
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        assert isinstance(item, Dropped)
        return
    assert isinstance(item, StudyTrigger), item
    assert item.key == key
    assert item.marker == marker
    assert item.study_prefix == f"{PREFIX}{path}/"


@settings(max_examples=100)
@given(study_paths.filter(lambda p: all(s not in ("", ".", "..") for s in p.split("/"))))
def test_percent_encoded_spaces_decode_like_plus(path: str) -> None:
    # Some producers encode a space as %20 instead of '+': both must decode the same way.
    key = f"{PREFIX}{path}/_READY"
    body = s3_notification(BUCKET, "x")
    body["Records"][0]["s3"]["object"]["key"] = quote(key, safe="/")
    item = one(body)
    assert isinstance(item, StudyTrigger) and item.key == key
