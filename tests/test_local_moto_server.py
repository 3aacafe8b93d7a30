"""The local stack's server launcher: moto's routing intact for every service the stack uses,
and no per-request access log (its cost is what the launcher removes)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import boto3

from pipeline.local.stack import _PROJECT_ROOT, free_port


def test_routing_cache_lists_what_moto_lists() -> None:
    probe = (
        "import moto.backends as b, logging\n"
        "before = list(b.list_of_moto_modules())\n"
        "from pipeline.local.moto_server import quieten\n"
        "assert quieten()\n"
        "assert list(b.list_of_moto_modules()) == before and len(before) > 100, before\n"
        "assert list(b.list_of_moto_modules()) == before  # not an iterator used up once\n"
        "assert logging.getLogger('werkzeug').getEffectiveLevel() == logging.WARNING\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=_PROJECT_ROOT, check=True, timeout=120)


def test_server_routes_s3_sqs_events_and_logs_no_requests() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=_PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name="us-east-1")
        s3, sqs, events = (session.client(name, endpoint_url=endpoint) for name in ("s3", "sqs", "events"))
        s3.create_bucket(Bucket="launcher-check")
        s3.put_object(Bucket="launcher-check", Key="a/b c.dcm", Body=b"x" * 1000)
        assert s3.get_object(Bucket="launcher-check", Key="a/b c.dcm")["Body"].read() == b"x" * 1000
        url = sqs.create_queue(QueueName="launcher-check")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hello"
        events.create_event_bus(Name="launcher-check")
        assert events.put_events(Entries=[{"EventBusName": "launcher-check", "Source": "t", "DetailType": "d",
                                           "Detail": "{}"}])["FailedEntryCount"] == 0
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # moto's stock server prints one access line per request ('"GET /launcher-check/... HTTP/1.1" 200 -').
    assert b"HTTP/1.1\" 200" not in out + err, (out + err)[-2000:]
