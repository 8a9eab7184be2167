"""Speed of the bit-exact number formats (``lowbit.formats``) against the native casts that exist.

Run (takes the shared benchmark lock; about 30 s):

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_formats.py [--rows 1024 --cols 4096]

Every call quantizes (or dequantizes) the same ``rows x cols`` float32 N(0, 1) tensor; medians of 7 runs. Where a
native implementation of the same rounding exists, it is timed in the same run and checked to give identical
codes: torch's FP8 casts (``fp8_cast_native``) and ``ml_dtypes`` numpy casts for the FP8 and MX element types
(without scales, i.e. the element rounding alone). The ratio column is the native time over lowbit's: quote that,
not the absolute times, on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import median_time, print_table, write_results
from lowbit.formats import (
    fp8_cast,
    fp8_cast_native,
    quantize_int,
    quantize_mx,
    quantize_nvfp4,
    round_to_element,
)

ML_DTYPES = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=4096)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.rows, args.cols)
    x_np = x.numpy()
    n = x.numel()
    rows: list[dict[str, Any]] = []

    def add(call: str, fn: Callable[[], Any], native: str = "", native_fn: Callable[[], Any] | None = None) -> None:
        t = median_time(fn, repeats=7)
        row: dict[str, Any] = {"call": call, "ms": 1e3 * t, "M_elem_per_s": n / t / 1e6, "native": native}
        if native_fn is not None:
            tn = median_time(native_fn, repeats=7)
            row["native_ms"] = 1e3 * tn
            row["lowbit_over_native"] = t / tn
        rows.append(row)

    add("quantize_mx(x, 'e2m1', scale_rule='ceil')", lambda: quantize_mx(x, "e2m1", scale_rule="ceil"))
    add("quantize_mx(x, 'e4m3')", lambda: quantize_mx(x, "e4m3"))
    mx = quantize_mx(x, "e4m3")
    add("MXTensor.dequantize() (e4m3)", mx.dequantize)
    add("quantize_nvfp4(x)", lambda: quantize_nvfp4(x))
    add("quantize_int(x, 8, 'channel')", lambda: quantize_int(x, 8, "channel"))
    add("quantize_int(x, 4, 'group', 128)", lambda: quantize_int(x, 4, "group", 128))
    for fmt in ("e4m3", "e5m2"):
        ref, nat = fp8_cast(x, fmt), fp8_cast_native(x, fmt)
        if not torch.equal(ref.view(torch.uint8), nat.view(torch.uint8)):
            raise AssertionError(f"fp8_cast and fp8_cast_native differ for {fmt}")
        add(
            f"fp8_cast(x, '{fmt}') (reference)",
            lambda fmt=fmt: fp8_cast(x, fmt),
            "torch .to(float8)",
            lambda fmt=fmt: fp8_cast_native(x, fmt),
        )
    for elem, dt in ML_DTYPES.items():
        # Identical values wherever both are in range (|x| < 6 fits every element type; beyond its max normal
        # ml_dtypes gives NaN or Inf where lowbit saturates, a documented difference).
        inside = np.abs(x_np) < 6
        mine, theirs = round_to_element(x, elem).numpy(), x_np.astype(dt).astype(np.float32)
        if not np.array_equal(mine[inside], theirs[inside]):
            raise AssertionError(f"round_to_element differs from ml_dtypes for {elem}")
        add(
            f"round_to_element(x, '{elem}')",
            lambda elem=elem: round_to_element(x, elem),
            f"ml_dtypes {dt.__name__}",
            lambda dt=dt: x_np.astype(dt),
        )
    header = ["call", "ms", "M elem/s", "native", "native ms", "lowbit / native"]
    print_table(
        header,
        [
            [
                r["call"],
                r["ms"],
                r["M_elem_per_s"],
                r["native"],
                r.get("native_ms", "-"),
                r.get("lowbit_over_native", "-"),
            ]
            for r in rows
        ],
    )
    path = write_results("formats", {"shape": [args.rows, args.cols], "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
