"""Command line: ``compress`` a local folder now; ``local``, ``submit`` and ``status`` talk to the stack."""

from __future__ import annotations

import argparse
import json
import os
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
    return base.with_overrides(rate=args.rate, mode=mode, codec=args.codec, verify=False if args.no_verify else None)


def cmd_compress(args: argparse.Namespace) -> int:
    from pipeline.engine import Study, compress_study
    from pipeline.outputs.local import write_local_outputs
    from pipeline.outputs.record import summary_lines
    from pipeline.study.source import LocalStudySource, SourceError

    try:
        settings = _settings(args)
        source = LocalStudySource(args.source)
    except (SettingsError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(f"{source.name}.zip")
    record = write_local_outputs(
        Study.from_source(source), out, settings, workers=args.workers, progress=_ProgressBar()
    )
    print("\n".join(summary_lines(record)))
    print(f"result record: {out.with_suffix('.result.json')}")
    return 1 if record["status"] == "failed" else 0


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
    p.add_argument("--workers", type=int, default=None, help="encoder processes (default: the CPUs available)")
    p.set_defaults(func=cmd_compress)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
