"""``lowbit report [--quick] [--out DIR] [--results DIR] [--section NAME ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lowbit.lab.report.build import ReportConfig, build_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser("report", help="run every report section and write DIR/index.html and DIR/summary.json")
    p.add_argument("--quick", action="store_true", help="small sizes: the whole report in a few minutes")
    p.add_argument("--out", type=Path, default=Path("lowbit-report"), help="output folder (default: lowbit-report)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the synthetic data")
    p.add_argument("--section", action="append", default=[], help="run only this section (repeatable)")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="read stored benchmark results (msd_linear.json, attention.json, costmodel.json, rl*.json) from DIR, "
        "e.g. benchmarks/results or the --out folder of `lowbit rl` (default: the copies packaged with lowbit)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report; exit code 1 when any section failed."""
    config = ReportConfig(
        out=args.out, quick=args.quick, seed=args.seed, only=tuple(args.section), results=args.results
    )
    index, ok = build_report(config)  # a bad --results or --section raises ValueError: the CLI prints it
    print(f"report written to {index}")
    if not ok:
        print("some report sections FAILED; see the page and summary.json", file=sys.stderr)
        return 1
    return 0
