"""Attention error tables: quantized-KV dequant vs MSD, and AMLA vs FA-2 vs float64 (plus timings of the rescales).

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_attention.py [--quick]

Writes ``benchmarks/results/attention.json``. Full mode: sequence lengths 1K-32K, head dims 64 and 128, three
cache layouts, keys with outlier channels (and Gaussian keys at 4K and 32K); AMLA on DeepSeek-V3 MLA decode at
4K and 32K keys, one and two query tokens, ramp / jump / Gaussian running maxima.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import median_time, print_table, write_results
from lowbit.attention.flash import flash_attention
from lowbit.attention.mla import DEEPSEEK_V3_MLA, mla_decode_inputs
from lowbit.lab.attention.amla_errors import AmlaErrorRow, amla_error_table
from lowbit.lab.attention.kv_errors import KVErrorRow, kv_error_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.quick:
        kv = kv_error_table((1024, 4096), (64,))
        amla = amla_error_table((4096,), seq_qs=(1,))
    else:
        kv = kv_error_table((1024, 4096, 16384, 32768), (64, 128))
        kv += kv_error_table((4096, 32768), (128,), outliers=(False,))
        amla = amla_error_table((4096, 32768), seq_qs=(1, 2), patterns=("ramp", "jump", "gaussian"))
    print_table(list(KVErrorRow.HEADER), [r.cells() for r in kv])
    print()
    print_table(list(AmlaErrorRow.HEADER), [r.cells() for r in amla])

    q, k, v = mla_decode_inputs(DEEPSEEK_V3_MLA, 4096)
    scale = DEEPSEEK_V3_MLA.softmax_scale
    timings = []
    for mode in ("mul", "amla", "amla-bf16"):
        t = median_time(lambda m=mode: flash_attention(q, k, v, scale=scale, rescale=m), repeats=3)
        timings.append([mode, t * 1e3])
    base = timings[0][1]
    for row in timings:
        row.append(row[1] / base)
    print()
    print_table(["rescale", "ms (MLA decode, 4K keys)", "÷ mul"], timings)
    path = write_results(
        "attention",
        {
            "quick": args.quick,
            "kv_header": list(KVErrorRow.HEADER),
            "kv": [r.cells() for r in kv],
            "amla_header": list(AmlaErrorRow.HEADER),
            "amla": [r.cells() for r in amla],
            "timing_header": ["rescale", "ms", "ratio_to_mul"],
            "timings": timings,
            "timing_note": "CPU reference implementations in torch; the integer add is extra tensor ops here, "
            "not a speed claim about the kernel",
            "seconds": time.perf_counter() - start,
        },
    )
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
