"""``python -m devstack``: the local stack (``up``, ``poll``, ``demo``) and the client commands
(``submit``, ``presign``, ``status``) that work against it or against a deployed stack."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence


def cmd_up(args: argparse.Namespace) -> int:
    import time

    from devstack.poller import Poller
    from devstack.stack import RunningStack

    with RunningStack(args.port, visibility_timeout=args.visibility_timeout) as stack:
        print(f"local stack on {stack.endpoint}")
        print(f"  bucket            {stack.bucket} (studies under incoming/, outputs under compressed/)")
        print(f"  study queue       {stack.queue_url}")
        print(f"  dead-letter queue {stack.dlq_url}")
        print(f"  event bus         {stack.bus_name} -> {stack.notification_queue_url}")
        print("drop a study in with:")
        print(f"  AWS_ENDPOINT_URL={stack.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \\")
        print(f"    python -m devstack submit ./my-study s3://{stack.bucket}/incoming/clinic-1/my-study/")
        # The AWS CLI skips /dev/null as a source ("character special device"): an empty marker is a put-object.
        print(
            f"  (or: aws --endpoint-url {stack.endpoint} s3 cp --recursive ./my-study s3://{stack.bucket}/incoming/clinic-1/my-study/ "
            f"&& aws --endpoint-url {stack.endpoint} s3api put-object --bucket {stack.bucket} --key incoming/clinic-1/my-study/_READY)"
        )
        print("Ctrl-C (or SIGTERM) stops it.", flush=True)
        poller = Poller(stack.queue_url).start()
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
            poller.stop()
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
    from devstack.submit import SubmitError, submit_study

    marker = "ready" if args.ready else "manifest"
    try:
        result = submit_study(args.local_dir, args.url, marker=marker, options=_manifest_options(args))
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"uploaded {result['files']} files to s3://{result['bucket']}/{result['prefix']}, then {result['marker']}")
    return 0


def cmd_presign(args: argparse.Namespace) -> int:
    from devstack.presign import PresignError, presign_study

    try:
        made = presign_study(
            args.url,
            args.local_dir,
            clinic=args.clinic,
            expires=args.expires,
            out_dir=args.out,
            options=_manifest_options(args),
        )
    except PresignError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print("\n".join(made.summary_lines()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from devstack.status import study_status
    from devstack.submit import parse_s3_url

    bucket, prefix = parse_s3_url(args.url)
    status = study_status(bucket, prefix)
    print(json.dumps(status, indent=2))
    return 1 if status["state"] == "failed" else 0


def cmd_poll(args: argparse.Namespace) -> int:
    from devstack.poller import Poller

    poller = Poller(args.queue_url)
    try:
        poller.run()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    return run_demo(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="run the local stack (moto server + SQS poller) until Ctrl-C or SIGTERM")
    p.add_argument("--port", type=int, default=4566)
    p.add_argument("--visibility-timeout", type=int, default=60, help="study queue visibility timeout (s)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("submit", help="upload a study folder, then its marker (manifest.json by default)")
    p.add_argument("local_dir")
    p.add_argument("url", help="s3://BUCKET/incoming/<study>/")
    p.add_argument("--ready", action="store_true", help="write _READY instead of manifest.json")
    _add_manifest_arguments(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "presign",
        help="presigned PUT URLs for every file of a study, then its manifest.json (for clinics without AWS credentials)",
    )
    p.add_argument("url", help="s3://BUCKET/incoming/<clinic>/<study>/")
    p.add_argument("local_dir", help="the study folder (read for each file's size and sha256)")
    p.add_argument(
        "--clinic", required=True, help="the clinic the URLs are for: the first folder below the source prefix"
    )
    p.add_argument(
        "--expires",
        type=int,
        default=3600,
        help="seconds the URLs stay valid (1 to 604800, S3's maximum; default 3600)",
    )
    p.add_argument(
        "-o", "--out", default="presigned", help="folder for urls.tsv and manifest.json (default: ./presigned)"
    )
    _add_manifest_arguments(p)
    p.set_defaults(func=cmd_presign)

    p = sub.add_parser("status", help="where a study stands")
    p.add_argument("url", help="s3://BUCKET/incoming/<study>/")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "poll",
        help="run only the SQS poller (the Lambda service's part) against a running stack (env: AWS_ENDPOINT_URL, DATA_BUCKET, ...)",
    )
    p.add_argument("queue_url")
    p.set_defaults(func=cmd_poll)

    p = sub.add_parser("demo", help="start the local stack, compress the fixture study, show the outputs, stop")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
