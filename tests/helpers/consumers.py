"""The real consumers the interoperability tests run, from Debian (`make tools`): Orthanc with
its GDCM plugin (a server on 127.0.0.1, started and stopped here), DCMTK's dcmdump, dicom3tools'
dciodvfy, OpenJPEG's opj_decompress; and python-gdcm (>= 3.2) from the venv."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import numpy as np

ORTHANC_GDCM_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancGdcm.so")
#: Debian installs Orthanc in /usr/sbin, which a non-root PATH may lack.
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
TOOLS = {ORTHANC: "orthanc", "dcmdump": "dcmtk", "dciodvfy": "dicom3tools", "opj_decompress": "libopenjp2-tools"}


def missing_tools() -> list[str]:
    """Debian packages whose tool is not installed."""
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not ORTHANC_GDCM_PLUGIN.exists():
        missing.append("orthanc-gdcm")
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One Orthanc on 127.0.0.1 with a temporary storage and the GDCM plugin; no DICOM port."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="orthanc-")
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Orthanc:
        root = Path(self.dir.name)
        config = {
            "Name": "interop-test",
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "Plugins": [str(ORTHANC_GDCM_PLUGIN)],
            "HttpThreadsCount": 2,
            "ConcurrentJobs": 1,
            "StorageCompression": False,
            "LuaScripts": [],
        }
        (root / "config.json").write_text(json.dumps(config))
        self.log = open(root / "orthanc.log", "wb")
        self.proc = subprocess.Popen([ORTHANC, str(root / "config.json")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError("Orthanc did not answer within 30 s")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.dir.cleanup()

    def log_text(self) -> str:
        self.log.flush()
        return (Path(self.dir.name) / "orthanc.log").read_text(errors="replace")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=60) as resp:
            return resp.read()

    def store(self, data: bytes) -> str:
        """POST /instances; the instance's Orthanc ID."""
        req = urllib.request.Request(self.base + "/instances", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc did not store the instance: {answer.get('Status')}")
        return str(answer["ID"])

    def frame(self, instance: str, index: int, kind: str) -> np.ndarray:
        """/instances/{id}/frames/{index}/{kind} (image-uint16, image-int16, preview) as an array;
        urllib.error.HTTPError when Orthanc cannot decode it."""
        import imagecodecs

        image = imagecodecs.png_decode(self.get(f"/instances/{instance}/frames/{index}/{kind}"))
        return image.view(np.int16) if kind == "image-int16" else image


def dcmdump_ok(path: Path) -> tuple[bool, str]:
    """DCMTK parses the whole file (pixel data included) without an error."""
    proc = subprocess.run(
        ["dcmdump", "-q", "+E", str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("E:", "F:"))]
    return proc.returncode == 0 and not errors, (proc.stderr or "")[-300:]


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines, without the element values they may quote."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    return sorted({line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")})


def _read_pgx(path: Path) -> np.ndarray:
    """OpenJPEG's PGX: 'PG ML|LM +|- depth width height' then the samples."""
    raw = path.read_bytes()
    end = raw.index(b"\n")
    fields = raw[:end].split()
    order, sign, depth, width, height = fields[1], fields[2], int(fields[3]), int(fields[4]), int(fields[5])
    size = 1 if depth <= 8 else 2 if depth <= 16 else 4
    dtype = np.dtype(f"{'>' if order == b'ML' else '<'}{'i' if sign == b'-' else 'u'}{size}")
    return np.frombuffer(raw[end + 1 : end + 1 + width * height * size], dtype=dtype).reshape(height, width)


def opj_decode(codestream: bytes) -> np.ndarray:
    """Decode one J2K/HTJ2K codestream with opj_decompress: (rows, columns[, components])."""
    with tempfile.TemporaryDirectory(prefix="opj-") as tmp:
        src, out = Path(tmp) / "frame.j2k", Path(tmp) / "frame.pgx"
        src.write_bytes(codestream)
        proc = subprocess.run(
            ["opj_decompress", "-i", str(src), "-o", str(out)], capture_output=True, text=True, timeout=60
        )
        planes = sorted(Path(tmp).glob("frame*.pgx"))
        if proc.returncode != 0 or not planes:
            raise RuntimeError(f"opj_decompress failed: {(proc.stdout + proc.stderr)[-300:]}")
        arrays = [_read_pgx(p) for p in planes]
        return arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)


def gdcm_decode(path: Path) -> np.ndarray:
    """All frames as python-gdcm decodes them (its own HTJ2K decoder from 3.2 on), flat."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError("python-gdcm could not read the file")
    image = reader.GetImage()
    buffer = image.GetBuffer()
    if buffer is None:
        raise RuntimeError("python-gdcm could not decode the pixel data")
    return np.frombuffer(buffer.encode("utf-8", "surrogateescape"), dtype=np.uint8)


def gdcm_version() -> str:
    import gdcm

    return str(gdcm.Version.GetVersion())
