"""MSD accuracy study: msd.matmul vs the W8A16 / W4A16 dequant baselines, and the effective-bits table.

Writes ``benchmarks/results/msd_accuracy.json`` (``msd_accuracy_quick.json`` with ``--quick``). Accuracy only:
errors against float64 products with the same quantized weights and with the unquantized weights
(``docs/methods/msd.md`` §7, §8). Run it alone on a shared machine:

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_msd_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import print_table, write_results

from lowbit.lab.msd.study import (
    FULL_SHAPES,
    QUICK_SHAPES,
    accuracy_study,
    bits_table,
    explain_six_six,
    passes_sweep,
    six_six_search,
    summarize_accuracy,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (about a minute)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rows, k = (32, 2048) if args.quick else (256, 4096)

    table = bits_table(rows=rows, k=k, seed=args.seed)
    search = six_six_search(rows=rows, k=k, seed=args.seed)
    sweep = passes_sweep(rows=rows, k=k, seed=args.seed)
    print(f"Effective bits ({rows}x{k} BF16 activations per distribution)")
    print_table(
        ["scheme", "dist", "worst", "bound", "rms", "rel_l2", "enob", "paper"],
        [
            [r["scheme"], r["dist"], r["worst"], r["bound"], r["rms"], r["rel_l2"], r["enob"], r["paper"] or "-"]
            for r in table
        ],
    )
    explanation = explain_six_six(table, search)
    print(explanation)

    acc = accuracy_study(shapes=shapes, seed=args.seed, progress=lambda s: print("  ", s, flush=True))
    summary = summarize_accuracy(acc)
    print("\nMatmul accuracy (float32 recombination; q = same quantized weights, w = unquantized weights)")
    print_table(
        ["weight", "method", "M", "K", "N", "dist", "rel_l2_q", "max_err_q", "rel_l2_w"],
        [
            [r["weight"], r["method"], r["M"], r["K"], r["N"], r["dist"], r["rel_l2_q"], r["max_err_q"], r["rel_l2_w"]]
            for r in acc
        ],
    )
    print()
    print_table(
        [
            "weight",
            "method",
            "cases",
            "rel_l2_q_gmean",
            "max_err_q_worst",
            "rel_l2_w_gmean",
            "not_worse_vs_w",
            "lower_vs_q",
        ],
        [
            [
                s["weight"],
                s["method"],
                s["cases"],
                s["rel_l2_q_gmean"],
                s["max_err_q_worst"],
                s["rel_l2_w_gmean"],
                s["not_worse_than_dequant_vs_w"],
                s["lower_than_dequant_vs_q"],
            ]
            for s in summary
        ],
    )
    elapsed = time.perf_counter() - start
    path = write_results(
        "msd_accuracy_quick" if args.quick else "msd_accuracy",
        {
            "quick": args.quick,
            "seed": args.seed,
            "seconds": round(elapsed, 1),
            "activation_shape_bits": [rows, k],
            "shapes": [list(s) for s in shapes],
            "effective_bits": table,
            "passes_sweep": sweep,
            "six_six": search,
            "six_six_explanation": explanation,
            "accuracy": acc,
            "accuracy_summary": summary,
        },
    )
    print(f"\nwrote {path} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
