"""Command line: ``compress`` a local study folder into a ZIP and its result record, no AWS involved.

The local stack's commands (up, submit, presign, status, poll, demo) are ``python -m devstack``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from pipeline.config import CompressionSettings, SettingsError, encoders_from_env, settings_from_env


class _ProgressBar:
    """A single self-rewriting line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
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
    mode: Literal["lossless"] | None = "lossless" if args.lossless else None
    return base.with_overrides(
        rate=args.rate, mode=mode, codec=args.codec, verify=False if args.no_verify else None, min_psnr=args.min_psnr
    )


def cmd_compress(args: argparse.Namespace) -> int:
    from pipeline.budget import BudgetError, MemoryBudget, budget_override
    from pipeline.host import MIB, available_cpus
    from pipeline.outputs.local import write_local_outputs
    from pipeline.outputs.record import summary_lines
    from pipeline.study.source import LocalStudySource, SourceError
    from pipeline.study.study import Study

    try:
        settings = _settings(args)
        source = LocalStudySource(args.source)
        encoders = args.encoders or encoders_from_env() or available_cpus()
        in_flight = int(args.memory_budget * MIB) if args.memory_budget is not None else budget_override()
        budget = MemoryBudget.for_host(encoders, in_flight=in_flight)
    except (SettingsError, SourceError, BudgetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(f"{source.name}.zip")
    record = write_local_outputs(
        Study.from_source(source),
        out,
        settings,
        encoders=encoders,
        budget=budget,
        progress=_ProgressBar(),
        report=args.report,
    )
    print("\n".join(summary_lines(record)))
    print(f"result record: {out.with_suffix('.result.json')}")
    if record.get("output", {}).get("report"):
        print(f"quality report: {record['output']['report']}")
    return 1 if record["status"] == "failed" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a local study folder into OUT.zip + OUT.result.json")
    p.add_argument("source", help="the study folder")
    p.add_argument("-o", "--output", help="the ZIP to write (default: ./<folder name>.zip)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--rate", type=float, help="lossy JPEG 2000 rate (default: $COMPRESSION_RATE or 100; 0 = lossless)"
    )
    group.add_argument("--lossless", action="store_true", help="JPEG 2000 lossless")
    p.add_argument("--codec", choices=["j2k", "htj2k"], help="j2k (default) or htj2k")
    p.add_argument("--no-verify", action="store_true", help="do not decode and compare the output")
    p.add_argument("--report", action="store_true", help="also write OUT.report.html, the visual quality report")
    p.add_argument(
        "--min-psnr",
        type=float,
        default=None,
        metavar="DB",
        help="quality floor: range-PSNR every lossy image must reach (default: $MIN_PSNR_DB or 40; 0 = off)",
    )
    p.add_argument(
        "--encoders",
        "--workers",
        dest="encoders",
        type=int,
        default=None,
        help="encoder processes (default: $ENCODERS, else the CPUs available; --workers: its old name)",
    )
    p.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        metavar="MB",
        help="MiB of study data in flight at once (default: $MEMORY_BUDGET_MB, else from the memory available)",
    )
    p.set_defaults(func=cmd_compress)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
