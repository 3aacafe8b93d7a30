"""Command line: ``compress`` a local folder now; ``local``, ``submit``, ``presign`` and ``status`` talk to the stack."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Sequence

from pipeline.config import CompressionSettings, SettingsError, settings_from_env


class _ProgressBar:
    """A single self-rewriting line on a terminal; silent otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 40
        filled = int(width * done / max(total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def _settings(args: argparse.Namespace) -> CompressionSettings:
    base = settings_from_env()
    mode = "lossless" if args.lossless else None
    return base.with_overrides(rate=args.rate, mode=mode, codec=args.codec, verify=False if args.no_verify else None,
                               min_psnr=args.min_psnr)


def cmd_compress(args: argparse.Namespace) -> int:
    from pipeline.engine import Study
    from pipeline.outputs.local import write_local_outputs
    from pipeline.outputs.record import summary_lines
    from pipeline.study.source import LocalStudySource, SourceError

    from pipeline.budget import MIB, BudgetError, MemoryBudget, budget_override
    from pipeline.files.workers import available_cpus

    try:
        settings = _settings(args)
        source = LocalStudySource(args.source)
        workers = args.workers or available_cpus()
        in_flight = int(args.memory_budget * MIB) if args.memory_budget is not None else budget_override()
        budget = MemoryBudget.for_host(workers, in_flight=in_flight)
    except (SettingsError, SourceError, BudgetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(f"{source.name}.zip")
    record = write_local_outputs(
        Study.from_source(source), out, settings, workers=workers, budget=budget, progress=_ProgressBar(),
        report=args.report,
    )
    print("\n".join(summary_lines(record)))
    print(f"result record: {out.with_suffix('.result.json')}")
    if record.get("output", {}).get("report"):
        print(f"quality report: {record['output']['report']}")
    return 1 if record["status"] == "failed" else 0


def cmd_local(args: argparse.Namespace) -> int:
    import time

    from pipeline.local.stack import RunningStack
    from pipeline.local.worker import WorkerLoop

    with RunningStack(args.port, visibility_timeout=args.visibility_timeout) as stack:
        print(f"local stack on {stack.endpoint}")
        print(f"  bucket            {stack.bucket} (studies under incoming/, outputs under compressed/)")
        print(f"  study queue       {stack.queue_url}")
        print(f"  dead-letter queue {stack.dlq_url}")
        print(f"  event bus         {stack.bus_name} -> {stack.notification_queue_url}")
        print("drop a study in with:")
        print(f"  AWS_ENDPOINT_URL={stack.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\")
        print(f"    python -m pipeline submit ./my-study s3://{stack.bucket}/incoming/clinic-1/my-study/")
        # The AWS CLI skips /dev/null as a source ("character special device"): an empty marker is a put-object.
        print(f"  (or: aws --endpoint-url {stack.endpoint} s3 cp --recursive ./my-study s3://{stack.bucket}/incoming/clinic-1/my-study/ "
              f"&& aws --endpoint-url {stack.endpoint} s3api put-object --bucket {stack.bucket} --key incoming/clinic-1/my-study/_READY)")
        print("Ctrl-C (or SIGTERM) stops it.", flush=True)
        worker = WorkerLoop(stack.queue_url).start()
        # SIGTERM (systemd, docker stop, supervisors) must stop the stack as Ctrl-C does: otherwise
        # the moto server outlives this process and keeps the port.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
            worker.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _manifest_options(args: argparse.Namespace) -> dict[str, object]:
    """The manifest's settings from ``submit``'s and ``presign``'s shared options."""
    options: dict[str, object] = {}
    if args.rate is not None:
        options["compressionRate"] = args.rate
    if args.lossless:
        options["mode"] = "lossless"
    if args.codec:
        options["codec"] = args.codec
    if args.output_filename:
        options["outputFilename"] = args.output_filename
    if args.overwrite:
        options["overwriteExisting"] = True
    if args.metadata:
        options["metadata"] = json.loads(args.metadata)
    return options


def _add_manifest_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rate", type=float)
    group.add_argument("--lossless", action="store_true")
    p.add_argument("--codec", choices=["j2k", "htj2k"])
    p.add_argument("--output-filename")
    p.add_argument("--overwrite", action="store_true", help="overwriteExisting: true")
    p.add_argument("--metadata", help="JSON echoed into the result and the event")


def cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.local.submit import submit_study

    marker = "ready" if args.ready else "manifest"
    result = submit_study(args.local_dir, args.url, marker=marker, options=_manifest_options(args))
    print(f"uploaded {result['files']} files to s3://{result['bucket']}/{result['prefix']}, then {result['marker']}")
    return 0


def cmd_presign(args: argparse.Namespace) -> int:
    from pipeline.local.presign import PresignError, presign_study

    try:
        made = presign_study(args.url, args.local_dir, clinic=args.clinic, expires=args.expires,
                             out_dir=args.out, options=_manifest_options(args))
    except PresignError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print("\n".join(made.summary_lines()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.local.status import study_status
    from pipeline.local.submit import parse_s3_url

    bucket, prefix = parse_s3_url(args.url)
    status = study_status(bucket, prefix)
    print(json.dumps(status, indent=2))
    return 1 if status["state"] == "failed" else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.local.worker import WorkerLoop

    loop = WorkerLoop(args.queue_url)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.local.demo import run_demo

    return run_demo(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a local study folder into OUT.zip + OUT.result.json")
    p.add_argument("source", help="the study folder")
    p.add_argument("-o", "--output", help="the ZIP to write (default: ./<folder name>.zip)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rate", type=float, help="lossy JPEG 2000 rate (default: $COMPRESSION_RATE or 100; 0 = lossless)")
    group.add_argument("--lossless", action="store_true", help="JPEG 2000 lossless")
    p.add_argument("--codec", choices=["j2k", "htj2k"], help="j2k (default) or htj2k")
    p.add_argument("--no-verify", action="store_true", help="do not decode and compare the output")
    p.add_argument("--report", action="store_true", help="also write OUT.report.html, the visual quality report")
    p.add_argument("--min-psnr", type=float, default=None, metavar="DB",
                   help="quality floor: range-PSNR every lossy image must reach (default: $MIN_PSNR_DB or 40; 0 = off)")
    p.add_argument("--workers", type=int, default=None, help="encoder processes (default: the CPUs available)")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MB",
                   help="MiB of study data in flight at once (default: $MEMORY_BUDGET_MB, else from the memory available)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("local", help="run the embedded local stack (moto server + worker) until Ctrl-C")
    p.add_argument("--port", type=int, default=4566)
    p.add_argument("--visibility-timeout", type=int, default=60, help="study queue visibility timeout (s)")
    p.set_defaults(func=cmd_local)

    p = sub.add_parser("submit", help="upload a study folder, then its marker (manifest.json by default)")
    p.add_argument("local_dir")
    p.add_argument("url", help="s3://BUCKET/incoming/<study>/")
    p.add_argument("--ready", action="store_true", help="write _READY instead of manifest.json")
    _add_manifest_arguments(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("presign", help="presigned PUT URLs for every file of a study, then its manifest.json (for clinics without AWS credentials)")
    p.add_argument("url", help="s3://BUCKET/incoming/<clinic>/<study>/")
    p.add_argument("local_dir", help="the study folder (read for each file's size and sha256)")
    p.add_argument("--clinic", required=True, help="the clinic the URLs are for: the first folder below the source prefix")
    p.add_argument("--expires", type=int, default=3600, help="seconds the URLs stay valid (1 to 604800, S3's maximum; default 3600)")
    p.add_argument("-o", "--out", default="presigned", help="folder for urls.tsv and manifest.json (default: ./presigned)")
    _add_manifest_arguments(p)
    p.set_defaults(func=cmd_presign)

    p = sub.add_parser("status", help="where a study stands")
    p.add_argument("url", help="s3://BUCKET/incoming/<study>/")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("worker", help="run only the worker loop against a running stack (env: AWS_ENDPOINT_URL, DATA_BUCKET, ...)")
    p.add_argument("queue_url")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="start the local stack, compress the fixture study, show the outputs, stop")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
