"""``lowbit formats [--values ELEM] [--json PATH]``: the table of number formats, or every code of one element."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lowbit._atomic import atomic_write_text
from lowbit.cli_tables import print_rich_table
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
    p.add_argument(
        "--values",
        choices=sorted(ELEMENT_FORMATS),
        default=None,
        metavar="ELEM",
        help="instead of the table, list every code of element format ELEM (one of "
        + ", ".join(sorted(ELEMENT_FORMATS))
        + ") with its sign.exponent.mantissa bits and its value (NaN/Inf where the format has them); "
        "default: print the formats table",
    )
    p.add_argument(
        "--block",
        type=int,
        default=32,
        metavar="N",
        help="MX block size used for the bits/element column of the MX rows, bits + 8/N "
        "(positive integer; default 32, the OCP MX block)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write what is printed as JSON to PATH (a list of table rows, or of {code, bits, value} with "
        "--values); written atomically; default: print only",
    )
    p.set_defaults(func=run)


def _print(title: str, header: list[str], rows: list[list[object]]) -> None:
    print_rich_table(title, header, rows, digits=6)


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
