"""``lowbit attention``: error tables of quantized-KV attention (dequant vs MSD) and AMLA rescaling."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lowbit.cli_tables import int_list, print_rich_table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lowbit attention``."""
    p = subparsers.add_parser(
        "attention",
        help="error tables: quantized-KV attention (dequant vs MSD) and AMLA rescaling vs float64",
        description="Relative L2 errors against float64 attention. KV table: INT8/MXFP4 caches, dequant vs MSD "
        "(docs/methods/msd.md §9). AMLA table: DeepSeek-V3 MLA decode, integer-add rescale vs FA-2 multiply "
        "(docs/methods/amla.md §6). A study of lowbit.attention, not a user tool.",
    )
    p.add_argument(
        "--table",
        choices=("kv", "amla", "all"),
        default="all",
        help="which table: kv (quantized KV cache), amla (AMLA rescaling) or all (default all)",
    )
    p.add_argument(
        "--seqs",
        type=int_list,
        default=[1024, 4096],
        metavar="LEN,...",
        help="KV table: key sequence lengths, comma-separated (default 1024,4096)",
    )
    p.add_argument(
        "--dims",
        type=int_list,
        default=[64, 128],
        metavar="D,...",
        help="KV table: head dims, comma-separated (default 64,128; MXFP4 needs multiples of 32)",
    )
    p.add_argument(
        "--gaussian",
        action="store_true",
        help="KV table: also rows with Gaussian keys (no outlier channels) next to the outlier-channel keys",
    )
    p.add_argument(
        "--amla-seqs",
        type=int_list,
        default=[4096],
        metavar="LEN,...",
        help="AMLA table: key sequence lengths of the MLA decode, comma-separated (default 4096)",
    )
    p.add_argument(
        "--block-k", type=int, default=512, help="keys per FlashAttention block (online-softmax step; default 512)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the rows as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute and print the requested tables."""
    from lowbit.lab.attention.amla_errors import AmlaErrorRow, amla_error_table
    from lowbit.lab.attention.kv_errors import KVErrorRow, kv_error_table

    out: dict[str, object] = {}
    if args.table in ("kv", "all"):
        outliers = (True, False) if args.gaussian else (True,)
        rows = kv_error_table(args.seqs, args.dims, outliers=outliers, block_k=args.block_k, seed=args.seed)
        print_rich_table(
            "Quantized KV cache, decode (8 query / 2 KV heads): rel. L2 vs float64 (total: unquantized K,V; "
            "method: the dequantized cache)",
            KVErrorRow.HEADER,
            [r.cells() for r in rows],
        )
        out["kv"] = [asdict(r) for r in rows]
    if args.table in ("amla", "all"):
        rows_a = amla_error_table(args.amla_seqs, block_k=args.block_k, seed=args.seed)
        print_rich_table(
            "AMLA on DeepSeek-V3 MLA decode (128 heads, 576/512, scale 0.1352): rel. L2",
            AmlaErrorRow.HEADER,
            [r.cells() for r in rows_a],
        )
        out["amla"] = [asdict(r) for r in rows_a]
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0
