"""The local stack's server launcher: moto's routing intact for every service the stack uses,
and no per-request access log (its cost is what the launcher removes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack.stack import REPO, _clients, free_port, start_moto


def test_routing_cache_lists_what_moto_lists() -> None:
    probe = (
        "import moto.backends as b, logging\n"
        "before = list(b.list_of_moto_modules())\n"
        "from devstack.moto_server import quieten\n"
        "assert quieten()\n"
        "assert list(b.list_of_moto_modules()) == before and len(before) > 100, before\n"
        "assert list(b.list_of_moto_modules()) == before  # not an iterator used up once\n"
        "assert logging.getLogger('werkzeug').getEffectiveLevel() == logging.WARNING\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, timeout=120)


def test_server_routes_s3_sqs_events_and_logs_no_requests(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "moto.log"
    with open(log_path, "wb") as log:
        proc = start_moto(port, log=log)
    try:
        s3, sqs, events = _clients(f"http://127.0.0.1:{port}")
        s3.create_bucket(Bucket="launcher-check")
        s3.put_object(Bucket="launcher-check", Key="a/b c.dcm", Body=b"x" * 1000)
        assert s3.get_object(Bucket="launcher-check", Key="a/b c.dcm")["Body"].read() == b"x" * 1000
        url = sqs.create_queue(QueueName="launcher-check")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hello"
        events.create_event_bus(Name="launcher-check")
        assert (
            events.put_events(
                Entries=[{"EventBusName": "launcher-check", "Source": "t", "DetailType": "d", "Detail": "{}"}]
            )["FailedEntryCount"]
            == 0
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = log_path.read_bytes()
    # moto's stock server prints one access line per request ('"GET /launcher-check/... HTTP/1.1" 200 -').
    assert b'HTTP/1.1" 200' not in output, output[-2000:]
