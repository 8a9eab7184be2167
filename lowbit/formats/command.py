"""``lowbit formats [--values ELEM] [--json PATH]``: the table of number formats, or every code of one element."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lowbit._atomic import atomic_write_text
from lowbit.formats.catalog import FORMAT_HEADER, code_listing, format_table
from lowbit.formats.elements import ELEMENT_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lowbit formats``."""
    p = subparsers.add_parser(
        "formats",
        help="table of the number formats (bits, emax, max normal, min subnormal, bits/element incl. scale)",
        description="INT8/INT4, FP8 E4M3FN/E5M2, OCP MX v1.0 (MXFP8/6/4, E8M0 scale per block) and NVFP4. "
        "With --values ELEM, list every code of that element format with its bits and value.",
    )
    p.add_argument("--values", choices=sorted(ELEMENT_FORMATS), default=None, help="list every code of ELEM")
    p.add_argument("--block", type=int, default=32, help="MX block size for the bits/element column (default 32)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.set_defaults(func=run)


def _print(title: str, header: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left")
    for h in header:
        table.add_column(escape(h), justify="right")
    for r in rows:
        table.add_row(*(escape(f"{c:.6g}" if isinstance(c, float) else str(c)) for c in r))
    Console(width=200).print(table)


def _write_json(path: Path, payload: object) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2))


def run(args: argparse.Namespace) -> int:
    """Print the formats table (or one element's codes); exit code 0."""
    if args.block < 1:
        raise ValueError(f"--block must be a positive integer, got {args.block}")
    if args.values:
        listing = code_listing(args.values)
        _print(
            f"{args.values}: every code (sign.exponent.mantissa)",
            ["code", "bits", "value"],
            [[f"0x{c:02X}", b, v] for c, b, v in listing],
        )
        payload: object = [{"code": c, "bits": b, "value": v} for c, b, v in listing]
    else:
        rows = format_table(block=args.block)
        _print("lowbit number formats", FORMAT_HEADER, [r.cells() for r in rows])
        payload = [asdict(r) for r in rows]
    if args.json is not None:
        _write_json(args.json, payload)
    return 0
