"""Never a wrong image (issue 16): when what the codec wrote does not decode to the source, or
does not decode at all, the original bytes reach the ZIP, the record carries a warning and the
study ends ``succeeded_with_warnings`` — through ``process_file``, the engine (forked encoders)
and the S3 study job (the Lambda handler on in-process moto), for J2K and HTJ2K, for whole files
and for one frame of a multi-frame object read frame by frame.

The faults are injected at the codec: ``encode`` is given the source with one sample changed
(a real codestream that decodes, exactly, to other pixels: what an encoder bug looks like), or
returns bytes that are no codestream. The encoder processes are forked after the patch, so they
run it too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from moto import mock_aws
from pydicom.pixels import pixel_array

from bench.objects import build_multiframe
from devstack.poller import LambdaContext, sqs_event
from devstack.stack import LocalStack
from pipeline.aws import client, reset_clients
from pipeline.budget import MIB, MemoryBudget
from pipeline.codec.base import FrameSpec
from pipeline.codec.htj2k import HTJ2KCodec
from pipeline.codec.j2k import J2KCodec
from pipeline.config import CompressionSettings
from pipeline.engine import Study, compress_study
from pipeline.files.process import process_file
from pipeline.outputs.record import build_record
from pipeline.study.source import LocalStudySource
from tests.helpers.aws import create_resources, drain, get_bytes, get_record, upload, worker_env
from tests.helpers.studies import study_files

CT_SLICE = "ct-series/ge-hispeed-head-tilt/01.dcm"
CODECS = {"j2k": J2KCodec, "htj2k": HTJ2KCodec}
#: Streams every object above 512 KiB: a 12-frame 6 MiB object is read frame by frame.
SMALL_BUDGET = MemoryBudget.for_host(2, in_flight=4 * MIB)
BAD_FRAME = 7


def _one_sample_off(frame: np.ndarray) -> np.ndarray:
    wrong = frame.copy()
    wrong.flat[wrong.size // 2] ^= 1
    return wrong


def patch_encode(monkeypatch: pytest.MonkeyPatch, codec: str, fault: str, only: np.ndarray | None = None) -> list[int]:
    """Make ``codec``'s encode faulty (for the frame equal to ``only``, or every frame); returns
    a list that grows by one per faulty encode in this process (forked encoders count their own)."""
    cls = CODECS[codec]
    real = cls.encode
    hits: list[int] = []

    def encode(self: Any, frame: np.ndarray, spec: FrameSpec) -> bytes:
        if only is not None and not np.array_equal(frame, only):
            return real(self, frame, spec)
        hits.append(1)
        if fault == "mismatch":
            return real(self, _one_sample_off(frame), spec)
        return b"\xff\x4f\xff\x51 this is no codestream"

    monkeypatch.setattr(cls, "encode", encode)
    return hits


def settings(codec: str, fault: str) -> CompressionSettings:
    # A lossless output that differs is caught by bit-exact verification; a lossy one that does
    # not decode, by the decode verification (and the quality floor) needs.
    return CompressionSettings(codec=codec, mode="lossless" if fault == "mismatch" else "lossy")


FAULTS = [(codec, fault) for codec in CODECS for fault in ("mismatch", "undecodable")]
REASON = {"mismatch": "differs from the source", "undecodable": "decod"}


# --------------------------------------------------------------------------- process_file


@pytest.mark.parametrize("codec,fault", FAULTS)
def test_process_file_keeps_the_original(corpus: Path, monkeypatch: pytest.MonkeyPatch, codec: str, fault: str) -> None:
    data = (corpus / CT_SLICE).read_bytes()
    clean = process_file("a.dcm", data, settings(codec, fault))
    assert clean.action == "compressed"  # the same file compresses when nothing is wrong
    hits = patch_encode(monkeypatch, codec, fault)
    out = process_file("a.dcm", data, settings(codec, fault))
    assert hits, "the fault was not reached"
    assert (out.action, out.warning, out.data) == ("kept", True, data)
    assert REASON[fault] in (out.reason or ""), out.reason


# --------------------------------------------------------------------------- the engine


def _study(corpus: Path, root: Path, *, multiframe: bool) -> Path:
    if multiframe:
        build_multiframe(root / "CBCT" / "volume.dcm", corpus, frames=12)
    else:
        (root / "CT").mkdir(parents=True)
        for i, name in enumerate(sorted((corpus / "ct-series/ge-hispeed-head-tilt").glob("*.dcm"))[:3]):
            shutil.copyfile(name, root / "CT" / f"IM{i + 1}")
    return root


def _target_frame(path: Path) -> np.ndarray:
    return pixel_array(pydicom.dcmread(path), index=BAD_FRAME)


def _check_record(record: dict[str, Any], kept: str, fault: str) -> None:
    """The one object kept, with the warning that says why."""
    assert record["status"] == "succeeded_with_warnings"
    entry = next(f for f in record["files"] if f["path"] == kept)
    assert entry["action"] == "kept" and entry["warning"] is True
    assert REASON[fault] in entry["reason"], entry["reason"]


def _compress_locally(
    root: Path, cfg: CompressionSettings, budget: MemoryBudget | None
) -> tuple[dict[str, Any], bytes]:
    buf = io.BytesIO()
    run = compress_study(Study.from_source(LocalStudySource(root)), buf, cfg, encoders=2, budget=budget)
    return build_record(run, output={}), buf.getvalue()


@pytest.mark.parametrize("codec,fault", FAULTS)
def test_engine_puts_the_original_in_the_zip(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, fault: str
) -> None:
    root = _study(corpus, tmp_path / "study", multiframe=False)
    patch_encode(monkeypatch, codec, fault)
    record, zipped = _compress_locally(root, settings(codec, fault), None)
    assert record["status"] == "succeeded_with_warnings"
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        for entry in record["files"]:
            assert entry["action"] == "kept" and entry["warning"] is True and REASON[fault] in entry["reason"]
            assert zf.read(entry["path"]) == (root / entry["path"]).read_bytes()


@pytest.mark.parametrize("codec,fault", FAULTS)
def test_engine_keeps_a_multiframe_object_whose_one_frame_fails(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, fault: str
) -> None:
    root = _study(corpus, tmp_path / "study", multiframe=True)
    volume = root / "CBCT" / "volume.dcm"
    clean, _ = _compress_locally(root, settings(codec, fault), SMALL_BUDGET)
    assert clean["files"][0]["action"] == "compressed"  # streamed and compressed when nothing is wrong
    patch_encode(monkeypatch, codec, fault, only=_target_frame(volume))
    record, zipped = _compress_locally(root, settings(codec, fault), SMALL_BUDGET)
    _check_record(record, "CBCT/volume.dcm", fault)
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert zf.read("CBCT/volume.dcm") == volume.read_bytes()


# --------------------------------------------------------------------------- the S3 study job


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, dict[str, bytes]], dict[str, Any]]]:
    """The worker Lambda on in-process moto: ``run(prefix, files)`` uploads a study with its
    ``_READY``, hands the handler the notification, and returns what came out."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name in ("COMPRESSION_RATE", "CODEC", "VERIFY", "ENCODERS", "WORKERS"):
            monkeypatch.delenv(name)
    probe = LocalStack("", "dicom-compression-test-data", "", "", "", "dicom-compression-test")
    for key, value in {**worker_env(probe), "ENCODERS": "2"}.items():
        monkeypatch.setenv(key, value)
    reset_clients()
    with mock_aws():
        stack = create_resources(client("s3"), client("sqs"), client("events"))
        sqs, s3 = client("sqs"), client("s3")
        drain(sqs, stack.queue_url)  # the s3:TestEvent
        arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        from handlers import worker

        def run(prefix: str, files: dict[str, bytes]) -> dict[str, Any]:
            upload(s3, stack.bucket, prefix, files)
            s3.put_object(Bucket=stack.bucket, Key=prefix + "_READY", Body=b"")
            messages = sqs.receive_message(
                QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
            assert len(messages) == 1
            assert worker.handler(sqs_event(messages, arn), LambdaContext(900)) == {"batchItemFailures": []}
            out = "compressed/" + prefix[len("incoming/") :].rstrip("/")
            record = get_record(s3, stack.bucket, out + ".result.json")
            zipped = get_bytes(s3, stack.bucket, out + ".zip")
            notes = drain(sqs, stack.notification_queue_url)
            return {"record": record, "zip": zipped, "events": [json.loads(m["Body"]) for m in notes]}

        yield run
    reset_clients()


@pytest.mark.parametrize("codec,fault", FAULTS)
def test_s3_job_delivers_the_originals_with_a_warning(
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lambda_env: Callable[..., dict[str, Any]],
    codec: str,
    fault: str,
) -> None:
    root = _study(corpus, tmp_path / "study", multiframe=False)
    monkeypatch.setenv("CODEC", codec)
    monkeypatch.setenv("COMPRESSION_RATE", "0" if fault == "mismatch" else "100")
    patch_encode(monkeypatch, codec, fault)
    out = lambda_env(f"incoming/clinic/{codec}-{fault}/", study_files(root))
    assert out["record"]["status"] == "succeeded_with_warnings"
    with zipfile.ZipFile(io.BytesIO(out["zip"])) as zf:
        for entry in out["record"]["files"]:
            assert entry["action"] == "kept" and entry["warning"] is True and REASON[fault] in entry["reason"]
            assert zf.read(entry["path"]) == (root / entry["path"]).read_bytes()
    [event] = out["events"]
    assert event["detail-type"] == "Study Compressed" and event["detail"]["status"] == "succeeded_with_warnings"


@pytest.mark.parametrize("codec", CODECS)
def test_s3_job_keeps_a_multiframe_object_whose_one_frame_fails(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lambda_env: Callable[..., dict[str, Any]], codec: str
) -> None:
    root = _study(corpus, tmp_path / "study", multiframe=True)
    volume = root / "CBCT" / "volume.dcm"
    monkeypatch.setenv("CODEC", codec)
    monkeypatch.setenv("COMPRESSION_RATE", "0")
    monkeypatch.setenv("MEMORY_BUDGET_MB", "4")  # the 6 MiB object is read from S3 frame by frame
    patch_encode(monkeypatch, codec, "mismatch", only=_target_frame(volume))
    out = lambda_env(f"incoming/clinic/{codec}-volume/", study_files(root))
    _check_record(out["record"], "CBCT/volume.dcm", "mismatch")
    with zipfile.ZipFile(io.BytesIO(out["zip"])) as zf:
        assert zf.read("CBCT/volume.dcm") == volume.read_bytes()
    [event] = out["events"]
    assert event["detail"]["status"] == "succeeded_with_warnings"
