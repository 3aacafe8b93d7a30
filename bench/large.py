"""Large single objects: peak memory of the whole worker process tree, and time (``make bench``).

    python -m bench.large [--quick] [--before REV] [--render-only]

The objects are built from real corpus CT frames (bench/objects.py) under .bench/. Each run is
the CLI (``python -m pipeline compress``) in a fresh process, or the local stack's worker for
the S3 row, sampled with bench.measure's TreeMemorySampler (RSS summed over the process tree,
as the issue's targets count it). ``--before REV`` also runs the same CLI rows from a git
worktree of REV, for a before/after table in one run. The results go to
.bench/results-large.json and into BENCHMARKS.md between the "large objects" markers;
``--render-only`` rewrites that section from the saved results without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.measure import TreeMemorySampler, start_poller
from bench.objects import build_deflate_bomb, build_multiframe
from bench.stats import median_of_ratios

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench"
CORPUS = Path(os.environ.get("DICOM_CORPUS", ROOT.parent / "shared" / "dicom-corpus"))
TARGET_MB = 300
BEGIN, END = "<!-- large objects: begin (python -m bench.large) -->", "<!-- large objects: end -->"


def log(msg: str) -> None:
    print(f"[bench.large {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_cli(code: Path, study: Path, *, workers: int, options: list[str]) -> dict[str, Any]:
    """One CLI run of the pipeline found in ``code``, on ``study``; peak summed RSS of its tree."""
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        out = Path(tmp) / "out.zip"
        env = {**os.environ, "PYTHONPATH": str(code)}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "compress",
                str(study),
                "-o",
                str(out),
                "--workers",
                str(workers),
                *options,
            ],
            cwd=code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        with TreeMemorySampler(proc.pid) as mem:
            _, err = proc.communicate()
        seconds = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"pipeline failed ({proc.returncode}): {err[-2000:]}")
        record = json.loads(out.with_suffix(".result.json").read_text())
        result = _summary(record, seconds, mem)
        if "--lossless" in options and record["status"] != "failed":
            result["independent_bit_exact"] = _gdcm_bit_exact(study, out, Path(tmp))
        return result


def _summary(record: dict[str, Any], seconds: float, mem: TreeMemorySampler) -> dict[str, Any]:
    files = record.get("files") or []
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(mem.peak_rss_kb / 1024, 1),
        "peak_pss_mb": round(mem.peak_pss_kb / 1024, 1),  # shared pages counted once
        "at_peak_main_pss_mb": round(mem.at_peak[1] / 1024, 1),
        "cpu_s": round(mem.cpu_seconds, 2),
        "status": record["status"],
        "actions": sorted({f"{f['action']}: {f.get('reason') or f.get('transferSyntaxOut')}"[:120] for f in files}),
        "pixel_ratio": (record.get("totals") or {}).get("pixelRatio"),
        "zip_bytes": (record.get("totals") or {}).get("bytesOut"),
        "spooled_bytes": (record.get("timings") or {}).get("spooledBytes"),
    }


def _gdcm_bit_exact(study: Path, zip_path: Path, tmp: Path) -> bool | None:
    """Every frame of every output decoded by GDCM (gdcmconv --raw), not by the pipeline's
    openjpeg, equals the source's pixel data, compared a megabyte at a time."""
    import shutil

    if shutil.which("gdcmconv") is None:
        return None
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            encoded, raw = tmp / "enc.dcm", tmp / "raw.dcm"
            with zf.open(name) as src, open(encoded, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            subprocess.run(["gdcmconv", "--raw", str(encoded), str(raw)], check=True, capture_output=True)
            if not _same_pixels(study / name, raw):
                return False
            encoded.unlink()
            raw.unlink()
    return True


def _same_pixels(a: Path, b: Path) -> bool:
    from pipeline.files.header import read_header
    from pipeline.study.source import ObjectReader

    with ObjectReader(open(a, "rb")) as ra, ObjectReader(open(b, "rb")) as rb:
        ha, hb = read_header(ra), read_header(rb)
        if ha.pixel is None or hb.pixel is None or ha.pixel.length != hb.pixel.length:
            return False
        left = ha.pixel.length or 0
        while left:
            n = min(left, 1 << 20)
            if ha.stream.read(n) != hb.stream.read(n):
                return False
            left -= n
    return True


def run_stack(study: Path, *, workers: int, options: dict[str, Any]) -> dict[str, Any]:
    """The same object through the local stack: uploaded to S3, read by ranged GETs, ZIP uploaded."""
    from bench.__main__ import await_outcome
    from devstack.stack import RunningStack
    from devstack.submit import submit_study
    from pipeline.aws import client
    from pipeline.outputs.s3 import get_json

    with RunningStack() as stack:
        prefix = f"incoming/bench-large/{study.name}/"
        listed = submit_study(study, f"s3://{stack.bucket}/{prefix}", marker="none")["listed"]
        worker = start_poller(stack, workers)
        record_key = f"compressed/bench-large/{study.name}.result.json"
        try:
            with TreeMemorySampler(worker.pid) as mem:
                t0 = time.perf_counter()
                manifest = {**options, "files": listed}
                client("s3").put_object(
                    Bucket=stack.bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest).encode()
                )
                await_outcome(stack, record_key, timeout=3600)
                seconds = time.perf_counter() - t0
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        record = get_json(client("s3"), stack.bucket, record_key)
    return _summary(record, seconds, mem)


def object_dirs(quick: bool) -> dict[str, Path]:
    """Where each object's folder is (built or not)."""
    base = WORK / ("large-quick" if quick else "large")
    return {name: base / name for name in ("one-400", "four-400", "one-2000", "bomb")}


def objects(quick: bool) -> dict[str, Path]:
    n400, n2000 = (40, 200) if quick else (400, 2000)
    dirs = object_dirs(quick)
    for i in range(4):
        build_multiframe(dirs["four-400"] / f"vol{i + 1}.dcm", CORPUS, frames=n400, name=f"four-{i}")
    build_multiframe(dirs["one-400"] / "vol.dcm", CORPUS, frames=n400)
    build_multiframe(dirs["one-2000"] / "vol.dcm", CORPUS, frames=n2000)
    build_deflate_bomb(dirs["bomb"] / "bomb.dcm", CORPUS, frames=n2000)
    return dirs


def write_section(section: str) -> None:
    bench_md = ROOT / "BENCHMARKS.md"
    text = bench_md.read_text() if bench_md.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    bench_md.write_text(text)


ROWS = [  # (key, object, workers, CLI options)
    ("one-400 rate100 w1", "one-400", 1, []),
    ("one-400 rate100 w2", "one-400", 2, []),
    ("four-400 rate100 w2", "four-400", 2, []),
    ("one-2000 rate100 w2", "one-2000", 2, []),
    ("one-2000 lossless w2", "one-2000", 2, ["--lossless"]),
    ("bomb rate100 w2", "bomb", 2, []),
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.large")
    parser.add_argument("--quick", action="store_true", help="small objects, for trying the bench itself")
    parser.add_argument("--before", metavar="REV", help="also run the CLI rows with the pipeline of git revision REV")
    parser.add_argument("--skip-stack", action="store_true", help="leave out the local-stack (S3) row")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the large-object section of BENCHMARKS.md from the last run's .bench/results-large.json",
    )
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads((WORK / ("results-large-quick.json" if args.quick else "results-large.json")).read_text())
        section = render(saved, object_dirs(saved.get("quick", args.quick)))
        print(section)
        if not args.quick:
            write_section(section)
        return 0
    WORK.mkdir(exist_ok=True)
    log("building the objects from corpus frames")
    objs = objects(args.quick)
    codes = {"after": ROOT}
    if args.before:
        tree = WORK / f"before-{args.before}"
        if not tree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True)
        codes = {"before": tree, "after": ROOT}
    res: dict[str, Any] = {"quick": args.quick, "rows": {}}
    for label, code in codes.items():
        for key, obj, workers, options in ROWS:
            log(f"{label}: {key}")
            res["rows"][f"{label}: {key}"] = run_cli(code, objs[obj], workers=workers, options=options)
    if not args.skip_stack:
        log("after: one-2000 rate100 w2 through the local stack (S3 ranged GETs in, multipart out)")
        res["rows"]["after: one-2000 rate100 w2, local stack"] = run_stack(
            objs["one-2000"], workers=2, options={"compressionRate": 100}
        )
    (WORK / ("results-large-quick.json" if args.quick else "results-large.json")).write_text(json.dumps(res, indent=2))
    section = render(res, objs)
    print(section)
    if not args.quick:
        write_section(section)
    return 0


def render(res: dict[str, Any], objs: dict[str, Path]) -> str:
    rows = res["rows"]
    sizes = {k: sum(p.stat().st_size for p in v.iterdir()) for k, v in objs.items() if v.is_dir()}
    lines = [
        BEGIN,
        "## Large objects (`python -m bench.large`, part of `make bench`)",
        "",
        "Objects built from real 512x512 CT frames (Multi-frame Grayscale Word SC, Explicit VR LE; the bomb is "
        "Deflated Explicit VR LE whose zero frames inflate to the same size). Peak = RSS summed over the whole "
        f"process tree (CLI or worker, and its encoders), sampled every 50 ms. Target: at most {TARGET_MB} MB. "
        "Each row ran once: every figure below is one measurement.",
        "",
        "| run | input | seconds | peak RSS MB | result | pixel ratio | GDCM bit-exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        obj = key.split(": ", 1)[1].split(" ")[0]
        lines.append(
            f"| {key} | {sizes.get(obj, 0) / 1e6:,.0f} MB | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['status']}: {'; '.join(r['actions'])[:90]} | {r['pixel_ratio']} | {r.get('independent_bit_exact', '-')} |"
        )
    for label in ("before", "after"):
        w1, w2 = rows.get(f"{label}: one-400 rate100 w1"), rows.get(f"{label}: one-400 rate100 w2")
        if w1 and w2:  # each row ran once: the report's statistic over one round
            speedup = median_of_ratios([w1["seconds"]], [w2["seconds"]])
            how = (
                "one measurement: each row ran once"
                if speedup.single
                else f"median of the per-round ratios: {speedup.listed()}"
            )
            lines += [
                "",
                f"{label}: one 400-frame object, 2 encoders / 1 encoder = {speedup.value:.2f} (target 1.6; {how})",
            ]
    over = [k for k, r in rows.items() if k.startswith("after") and r["peak_rss_mb"] > TARGET_MB]
    lines += ["", f"after: every row within {TARGET_MB} MB: {'yes' if not over else 'NO: ' + ', '.join(over)}", END]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
