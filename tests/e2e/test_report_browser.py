"""The quality report in a real browser: Debian's Chromium, headless, driven over the DevTools
protocol (a small websocket client below; no browser-driver package).

A corpus study (the corpus's ct-series folder: four CT series, DICOMDIRs, a dose screen) is
compressed by the CLI and its report opened from a file:// URL. Every request the page makes,
every console message, log entry and exception is collected from the protocol's events, so the
checks see what the page did rather than what a log line says. The same browser then opens a
page that does fetch and log an error, to show that the checks can fail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.report import build_report, report_path
from pipeline.study.source import LocalStudySource
from tests.helpers.paths import ROOT
from tests.helpers.png import read_png
from tests.helpers.report import compress

#: Where the screenshot is left for a person to look at (build/ is not committed).
SCREENSHOT = ROOT / "build" / "report-browser" / "screenshot.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
]
TIMEOUT = 30.0


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, masked from the client."""

    def __init__(self, url: str) -> None:
        assert url.startswith("ws://"), url
        hostport, _, path = url[len("ws://") :].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            assert chunk, "the DevTools endpoint closed the connection"
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (
            bytes([0x80 | n])
            if n < 126
            else bytes([0x80 | 126]) + struct.pack(">H", n)
            if n < 65536
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the DevTools endpoint closed the connection"
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            payload = self._read(n)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xA):  # ping / pong: not part of a message
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Page:
    """One tab over the DevTools protocol: commands, and every event kept."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.next_id, self.events = ws, 0, []  # type: list[dict[str, Any]]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(method)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(e["method"] == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} within {TIMEOUT} s"
            self.events.append(json.loads(self.ws.receive()))

    def open(self, url: str) -> None:
        """Navigate, wait for the load event, then a moment for anything late."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.call("Runtime.evaluate", expression="1", awaitPromise=False)  # a round trip: pending events arrive
        time.sleep(0.5)
        self.call("Runtime.evaluate", expression="1", awaitPromise=False)

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e["method"] == "Network.loadingFailed":
                out.append(f"loading failed: {p.get('errorText')}")
        return out

    def screenshot(self) -> bytes:
        """The whole page, beyond the window, as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        return base64.b64decode(
            self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium not found: install Debian's chromium (`make tools`)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ws = None
    try:
        deadline = time.monotonic() + TIMEOUT
        port_file = profile / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT) as response:
            targets = json.load(response)
        (target,) = [t for t in targets if t["type"] == "page"]
        ws = WebSocket(target["webSocketDebuggerUrl"])
        page = Page(ws)
        for domain in ("Page", "Network", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        yield page
    finally:
        if ws is not None:
            ws.close()
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


@pytest.fixture
def report(corpus: Path, tmp_path: Path) -> Path:
    study = corpus / "ct-series"
    zip_path = tmp_path / "ct-series.zip"
    record = compress(study, zip_path)
    out = report_path(zip_path)
    out.write_bytes(build_report(record, LocalStudySource(study), zip_path))
    return out


def test_the_report_renders_in_chromium_offline_and_without_errors(browser: Page, report: Path, tmp_path: Path) -> None:
    browser.open(report.as_uri())
    requests, errors = browser.requests(), browser.errors()
    shot = browser.screenshot()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(shot)
    title = browser.call("Runtime.evaluate", expression="document.title")["result"]["value"]
    images = browser.call(
        "Runtime.evaluate", expression="[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert title == "Compression quality report"
    assert images["result"]["value"] == report.read_text().count("<img "), "an image did not decode"
    assert errors == [], errors
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == [], requests
    assert requests and requests[0] == report.as_uri()

    pixels = read_png(shot)[..., :3]
    grey = pixels.astype(np.int32).sum(axis=2) // 3
    print(f"\nscreenshot {pixels.shape[1]}x{pixels.shape[0]} at {SCREENSHOT}")
    assert pixels.shape[0] > 1500  # the whole page, not only the window
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 500, colours  # text alone gives a few dozen; CT thumbnails hundreds of greys
    assert (grey < 30).mean() > 0.05 and (grey > 225).mean() > 0.3  # black image frames on a white page
    assert grey.std() > 40

    # The same checks on a page that fetches and errs: they catch both.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>')
    browser.open(bad.as_uri())
    assert "http://127.0.0.1:9/x.png" in browser.requests()
    assert any("console.error" in e for e in browser.errors())
