"""``lowbit report [--quick] [--out DIR] [--seed N] [--results DIR] [--section NAME ...]``.

Writes ``DIR/index.html`` (the verdict table first, then the sections) and ``DIR/summary.json``, and prints the
verdict table in the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lowbit.lab.report.build import ReportConfig, build_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = sub.add_parser(
        "report",
        help="run every report section and write DIR/index.html and DIR/summary.json",
        description="Run every report section (formats, LoPT, MSD, MSD linear layers, attention and AMLA, cost "
        "model, AIS) and write a self-contained HTML page and a JSON summary. The page opens with one verdict per "
        "paper claim (reproduced / explained / not reproduced / not measurable here / not measured), printed in "
        "the terminal too. Exit code 1 when a section fails.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and a 2-seed RL run: the whole report in a few minutes (default: full sizes, longer)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("lowbit-report"),
        metavar="DIR",
        help="output folder, replaced as a whole when the report is written (default: lowbit-report)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed of the synthetic data and runs (default: 0)"
    )
    p.add_argument(
        "--section",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this section (repeatable): formats, tokenize, msd, msd-linear, attention, costmodel or rl; "
        "claims of the sections left out show 'not measured' (default: every section)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="read stored benchmark results (msd_linear.json, attention.json, costmodel.json, rl*.json) from DIR, "
        "e.g. benchmarks/results or the --out folder of `lowbit rl` (default: the copies packaged with lowbit)",
    )
    p.set_defaults(func=run)


def print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    """Print the verdict rows of ``summary.json`` as a table sized to the terminal; a row without a figure shows
    why instead (the section was not run, failed, or the claim needs other hardware)."""
    from lowbit.cli_tables import print_rich_table

    print_rich_table(
        "What lowbit found: the papers' claims (details: the report's first table)",
        ["paper", "claim", "paper's figure", "lowbit measured", "verdict", "section"],
        [
            [v["paper"], v["claim"], v["paper_figure"], v["why"] if v["measured"] == "-" else v["measured"],
             v["verdict"], v["section"]]
            for v in verdicts
        ],
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the report and print its verdicts; exit code 1 when any section failed."""
    config = ReportConfig(
        out=args.out, quick=args.quick, seed=args.seed, only=tuple(args.section), results=args.results
    )
    index, ok = build_report(config)  # a bad --results or --section raises ValueError: the CLI prints it
    summary = json.loads((index.parent / "summary.json").read_text(encoding="utf-8"))
    print_verdicts(summary["verdicts"])
    print(f"report written to {index}")
    if not ok:
        print("some report sections FAILED; see the page and summary.json", file=sys.stderr)
        return 1
    return 0
