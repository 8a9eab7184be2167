"""``lowbit bits``: the MSD effective-bits table beside the paper's 16 / 6.6 / 5.24 (``docs/methods/msd.md`` §7).

A study, not a user tool: it measures :func:`lowbit.msd.decompose` with :func:`lowbit.msd.effective_bits` on the
synthetic activations of :mod:`lowbit.lab.msd.distributions` (:mod:`lowbit.lab.msd.study` computes the rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lowbit.cli_tables import print_rich_table
from lowbit.lab.msd.distributions import DISTRIBUTIONS
from lowbit.lab.msd.study import bits_table, explain_six_six, six_six_search


def register(subparsers: Any) -> None:
    """Add the ``bits`` subcommand."""
    p = subparsers.add_parser(
        "bits",
        help="MSD effective-bits table (INT8 / MXFP4 / MXFP8 x passes x distribution) vs the paper",
        description="Decompose BF16 activations with MSD and print the effective bits of every scheme: the "
        "worst-case definition (vs the group max M for INT8, vs alpha per 32-block for MX), -log2 relative RMS, "
        "and the relative L2 error, beside the paper's 16 (INT8 x2), 6.6 (MXFP4 x2) and 5.24 (MXFP8 x1).",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=16,
        help="token rows of BF16 activations drawn per distribution (positive; default 16)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=4096,
        help="row length K, the reduction dimension: INT8 uses one scale per row, MX one per 32-block "
        "(positive; default 4096)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random activations (default 0)")
    p.add_argument(
        "--dist",
        action="append",
        choices=DISTRIBUTIONS,
        help="activation distribution to include; repeat the option for several "
        f"(default: all of {', '.join(DISTRIBUTIONS)})",
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        help="skip the search for a bits definition and data set giving the paper's 6.6 (MXFP4 x2) together "
        "with 5.24 (MXFP8 x1); the main table is printed either way",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (keys bits, six_six, explanation) instead of the tables",
    )
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    """A cell: ``-`` for None, floats below 1 to 3 significant digits, others to 2 decimals (``16.00``)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print_rich_table(title, header, [[_fmt(v) for v in r] for r in rows])


def run(args: argparse.Namespace) -> int:
    """Compute and print the table (and the 6.6 search); returns 0."""
    if args.rows < 1 or args.k < 1:
        raise ValueError(f"--rows and --k must be positive, got {args.rows} and {args.k}")
    dists = tuple(args.dist) if args.dist else DISTRIBUTIONS
    table = bits_table(rows=args.rows, k=args.k, seed=args.seed, dists=dists)
    search = None if args.no_search else six_six_search(rows=args.rows, k=args.k, seed=args.seed, dists=dists)
    if args.json:
        explanation = explain_six_six(table, search) if search is not None else None
        json.dump({"bits": table, "six_six": search, "explanation": explanation}, sys.stdout, indent=2)
        print()
        return 0
    header = ["scheme", "dist", "worst-case bits", "bound bits", "-log2 rel RMS", "rel L2", "ENOB", "paper"]
    rows = [
        [r["scheme"], r["dist"], r["worst"], r["bound"], r["rms"], r["rel_l2"], r["enob"], r["paper"]] for r in table
    ]
    print(f"MSD effective bits on {args.rows}x{args.k} BF16 activations (seed {args.seed}).")
    print("worst-case: INT8 log2(M / max|e|) per group (row or K-block); MX -log2(max|e| / alpha) per 32-block, ")
    print("alpha = 2^(floor(log2 amax)+1). Paper: 16 (INT8 x2, worst case), 5.24 (MXFP8 x1, rel RMS), 6.6 (MXFP4 x2).")
    _print_table("Effective bits: scheme x distribution", header, rows)
    if search is not None:
        best = search["best"]
        print("Search for the paper's 6.6 (MXFP4 x2) together with 5.24 (MXFP8 x1) on the same data:")
        _print_table(
            "The 6.6 search: closest distribution per candidate definition",
            ["definition", "closest dist for 5.24", "MXFP8 x1", "closest dist for 6.6", "MXFP4 x2"],
            [
                [name, v["mxfp8_best"][0], v["mxfp8_best"][1], v["mxfp4_best"][0], v["mxfp4_best"][1]]
                for name, v in search["across_dists"].items()
            ],
        )
        print(
            f"Best single (definition, data, variant): {best['metric']} on {best['dist']} ({best['variant']}): "
            f"MXFP8 {best['mxfp8_x1']:.2f}, MXFP4 x2 {best['mxfp4_x2']:.2f}. "
            f"Same-data matches within {search['tolerance']} bit: {len(search['matches'])}."
        )
        print(explain_six_six(table, search))
    return 0
