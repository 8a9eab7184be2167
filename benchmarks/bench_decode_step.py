"""One decode step of the whole Llama-3.2-1B-shaped model, MSD against ``quantize_dynamic``, in one process.

``bench_generate.py`` runs every setup in its own subprocess, minutes apart, so its decode columns compare
processes run at different times on a shared machine. This script builds both models in one process (16 layers by
default, vocabulary 128256, random weights; ``bench_generate.build_float_model`` and ``make_setup``), fills a
transformers ``DynamicCache`` for each with ``--context`` tokens of random K/V, then times single-token forward
steps of the two **interleaved**: ``--rounds`` rounds, each timing ``--steps`` steps of either model in a shuffled
order (seeded). It reports the medians, the median of the per-round ratios ``msd / quantize_dynamic`` with its
10th-90th percentiles, and ``torch.profiler``'s self CPU time per op for three steps of each.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_decode_step.py [--layers 16] [--context 1024]

Writes ``benchmarks/results/decode_step.json`` (``--name`` to change).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import write_results
from bench_generate import build_float_model, fill_cache, make_setup

SETUPS = ("quantize_dynamic", "msd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16, help="decoder layers (default 16, as Llama-3.2-1B)")
    parser.add_argument("--context", type=int, default=1024, help="cached tokens before the timed steps")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setup and round (default 3)")
    parser.add_argument("--name", default="decode_step", help="results file name")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    models: dict[str, Any] = {}
    caches: dict[str, Any] = {}
    for name in SETUPS:
        model, new_cache = make_setup(name, build_float_model(args.layers, 128256, args.context + 1024))
        models[name] = model
        caches[name] = new_cache()
        fill_cache(caches[name], model, args.context, torch.float32)
    token = torch.tensor([[17]])

    def step(name: str) -> None:
        with torch.no_grad():
            models[name](input_ids=token, past_key_values=caches[name], use_cache=True)

    for name in SETUPS:  # warm-up: the compiled operator's build and self-check, first-call allocations
        step(name)
        step(name)
    times: dict[str, list[float]] = {name: [] for name in SETUPS}
    order_rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(SETUPS)
        order_rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            times[name].append((time.perf_counter() - t0) / args.steps)
    ratios = sorted(a / b for a, b in zip(times["msd"], times["quantize_dynamic"], strict=True))
    q = statistics.quantiles(ratios, n=10)
    result: dict[str, Any] = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": args.layers,
        "context": args.context,
        "median_ms": {name: statistics.median(v) * 1e3 for name, v in times.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_p10_p90": [q[0], q[-1]],
        "samples_ms": {name: [t * 1e3 for t in v] for name, v in times.items()},
    }
    from torch.profiler import profile

    result["profiler_self_cpu_ms_per_step"] = {}
    for name in SETUPS:
        with profile() as prof:
            for _ in range(3):
                step(name)
        table = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        result["profiler_self_cpu_ms_per_step"][name] = {
            e.key: {"ms": e.self_cpu_time_total / 3e3, "calls": e.count / 3} for e in table
        }
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    med = result["median_ms"]
    print(
        f"decode step, {args.layers} layers, context {args.context}: msd {med['msd']:.1f} ms, quantize_dynamic "
        f"{med['quantize_dynamic']:.1f} ms, ratio {result['ratio_median']:.3f} [{q[0]:.3f}, {q[-1]:.3f}]"
    )
    for name, ops in result["profiler_self_cpu_ms_per_step"].items():
        top = ", ".join(f"{k} {v['ms']:.1f} ms ({v['calls']:.0f} calls)" for k, v in list(ops.items())[:3])
        print(f"  {name}: {top}")
    print(f"wrote {write_results(args.name, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
