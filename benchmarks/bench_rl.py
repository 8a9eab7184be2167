"""AIS experiment and correction cost.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_rl.py [--quick] [lowbit rl flags ...]

1. Runs ``lowbit rl`` with its results written to ``benchmarks/results/rl.json`` and ``rl.png`` (plus
   ``rl-<dose>.png`` for a dose sweep).
2. Times :func:`lowbit.rl.correction` per mode on LLM-sized batches (median of repeats) and writes
   ``benchmarks/results/rl_correction_cost.json``: its cost per token, to set beside a training step.
"""

from __future__ import annotations

import sys

import torch
from _harness import RESULTS_DIR, median_time, print_table, write_results

from lowbit.cli import main
from lowbit.rl import MODES, CorrectionConfig, correction


def correction_cost(shapes: list[tuple[int, int]]) -> list[dict]:
    """Median wall time of ``correction`` for each mode and (B, T) shape, float32 inputs, 1 thread."""
    torch.set_num_threads(1)
    rows = []
    for b, t in shapes:
        g = torch.Generator().manual_seed(0)
        old = -torch.rand(b, t, generator=g) * 3
        roll = old - 0.05 * torch.randn(b, t, generator=g)
        mask = torch.rand(b, t, generator=g) < 0.9
        adv = torch.randn(b, generator=g)
        for mode in MODES:
            cfg = CorrectionConfig(mode=mode)
            sec = median_time(lambda cfg=cfg, x=(old, roll, mask, adv): correction(*x, cfg), repeats=7, warmup=2)
            rows.append({"batch": b, "tokens": t, "mode": mode, "seconds": sec, "ns_per_token": 1e9 * sec / (b * t)})
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    code = main(["rl", "--out", str(RESULTS_DIR), *args])
    quick = "--quick" in args
    rows = correction_cost([(128, 6)] if quick else [(128, 6), (64, 512), (256, 1024)])
    print_table(
        ["B", "T", "mode", "ms", "ns/token"],
        [[r["batch"], r["tokens"], r["mode"], 1e3 * r["seconds"], r["ns_per_token"]] for r in rows],
    )
    if not quick:
        write_results("rl_correction_cost", {"rows": rows})
    raise SystemExit(code)
