"""MSD INT8 decode (M = 1-8) against ``quantize_dynamic``: times, thread scaling, where the time goes (issue 12).

For each thread count (``torch.set_num_threads``), shape ``K x N`` (``nn.Linear(K, N)``, no bias) and M, the same
INT8 weights ``W̃ = q ⊙ s_w`` (per output channel, from ``W ~ N(0, 0.02²)``) are multiplied by

* ``msd``: ``MSDLinear`` INT8, two passes, ``kernel="auto"`` and ``decode_op="auto"`` (the defaults: the compiled
  decode operator of ``lowbit.msd.native`` where it loads), called as a module;
* ``msd_torch``: the same layer with ``decode_op="torch"`` (the decode step as ~12 torch calls from Python);
* ``quantize_dynamic``: ``torch.ao.quantization.quantize_dynamic`` (per-channel qint8 weights re-quantized from W̃,
  one dynamic 8-bit activation pass), called as a module.

The three are timed **interleaved** (rounds of ``calls`` calls of each, in a shuffled order per round), so load
from other processes hits all alike; the table gives the medians over rounds, ``ratio = msd / quantize_dynamic``
per round (median, and its 10th-90th percentile as the spread), the same for ``msd_torch`` and each side's spread
``(max - min) / median``. The results record whether the compiled operator ran (``fused_decode_op``).

``--profile`` (M = 1, first shape) splits one call into parts, timed interleaved the same way: the fbgemm GEMM alone
on the stacked 2-row input (``gemm_2row``) and on one row (``gemm_1row``), ``quantized::linear_dynamic`` alone
(``qd_op``), the torch-call decode function without the module wrapper (``decode_fn``), the compiled operator alone
(``fused_op``, where it loads; at M = 1 it runs its own GEMV), the same forced onto fbgemm's GEMM
(``fused_op_fbgemm``) and the operator's GEMV alone on the stacked rows (``gemv_2row``); and records
``torch.profiler``'s self CPU time per op for both modules. ``--kernels`` times the GEMM alone per backend (fbgemm,
onednn, int_mm on the stored weight) for 2-2048 rows (the ``kernel="auto"`` crossover). ``--memory`` builds layers
in subprocesses and records the resident-memory growth per layer for each ``kernel`` setting. ``--stack L`` times M
= 1 through ``L`` distinct layers per setup (``--stack-shape KxN``, default 4096x4096), one pass per round,
interleaved: a single layer called again and again is partly served from the last-level cache (300 MiB of L3 on the
machine of the quoted runs), a model's decode step is not.

    flock /tmp/lowbit-bench.lock .venv/bin/python benchmarks/bench_msd_decode.py [--quick] [--profile] \
        [--kernels] [--memory] [--stack LAYERS [--stack-shape KxN]] [--threads 1,2] [--name NAME] \
        [--shapes KxN,KxN] [--ms 1,2]

Writes ``benchmarks/results/msd_decode.json`` (``msd_decode_quick.json`` with ``--quick``, or ``<NAME>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(os.environ.get("LOWBIT_BENCH_SRC", Path(__file__).resolve().parent.parent))))

from _harness import print_table, write_results

from lowbit.msd import kernels as msd_kernels
from lowbit.msd import native
from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear

FULL_KN = ((4096, 4096), (4096, 11008), (11008, 4096))
QUICK_KN = ((4096, 4096),)
MS = (1, 2, 4, 8)


def _layers(k: int, n: int) -> tuple[MSDLinear, MSDLinear, nn.Module]:
    """The MSD layer (defaults), the same layer with ``decode_op="torch"``, the quantize_dynamic module on W̃."""
    return _layers_seeded(k, n, seed=k + 7 * n)


def _layers_seeded(k: int, n: int, *, seed: int) -> tuple[MSDLinear, MSDLinear, nn.Module]:
    """:func:`_layers` from the weights of generator seed ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.02)
    msd = MSDLinear.from_linear(lin, MSDConfig(weight="int8", passes=2))
    msd_torch = MSDLinear.from_linear(lin, MSDConfig(weight="int8", passes=2, decode_op="torch"))
    with torch.no_grad():
        lin.weight.copy_(msd.dequantized_weight(torch.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        qd = quantize_dynamic(nn.Sequential(lin), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return msd, msd_torch, qd


def interleaved(fns: dict[str, Any], *, rounds: int, calls: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round; within a round the functions run one after the
    other (``calls`` calls each), so a load change hits every function of that round, in an order shuffled per
    round (seeded): in a fixed order, two copies of one layer read 1.28x and 1.10x ``quantize_dynamic`` and 1.15x /
    1.12x with their order swapped (1 thread, M = 1; docs/msd-inference.md)."""
    order = list(fns)
    shuffle = random.Random(0).shuffle
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            shuffle(order)
            for name in order:
                fn = fns[name]
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - start) / calls)
    return samples


def _stats(samples: list[float]) -> dict[str, float]:
    med = statistics.median(samples)
    return {"median_s": med, "min_s": min(samples), "spread": (max(samples) - min(samples)) / med}


def _quantiles(values: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(values, n=10)
    return qs[0], qs[-1]


def bench_cell(msd: MSDLinear, msd_torch: MSDLinear, qd: nn.Module, m: int, *, rounds: int) -> dict[str, Any]:
    """msd and msd_torch vs quantize_dynamic at M = m, interleaved; per-round ratios give the ratio's spread."""
    k = msd.in_features
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(100 + m))
    with torch.no_grad():
        y, ref = msd(x), msd.reference_forward(x)
        if not torch.equal(y, msd_torch(x)):
            raise AssertionError(f"decode_op='auto' and 'torch' differ at M = {m}")
    err = float((y.double() - ref).norm() / ref.norm())
    fns = {"msd": lambda: msd(x), "msd_torch": lambda: msd_torch(x), "quantize_dynamic": lambda: qd(x)}
    s = interleaved(fns, rounds=rounds, calls=10)
    cell: dict[str, Any] = {"M": m, **{name: _stats(v) for name, v in s.items()}}
    for name, prefix in (("msd", "ratio"), ("msd_torch", "torch_ratio")):
        ratios = [a / b for a, b in zip(s[name], s["quantize_dynamic"], strict=True)]
        lo, hi = _quantiles(ratios)
        cell.update({f"{prefix}_median": statistics.median(ratios), f"{prefix}_p10": lo, f"{prefix}_p90": hi})
    cell.update({"msd_rel_err_vs_reference": err, "kernel": msd.kernel_for(m)})
    return cell


def bench_stack(k: int, n: int, layers: int, threads: list[int], *, rounds: int) -> dict[str, Any]:
    """M = 1 through a stack of ``layers`` distinct layers, as a decode step walks a model: ``msd`` (defaults),
    ``msd_torch`` and ``quantize_dynamic`` stacks built from the same float weights, one pass each per round,
    interleaved. With ``layers`` chosen so the INT8 weights exceed the last-level cache, every layer's weight
    comes from memory, as in a real model; a single layer called repeatedly is partly served from the cache
    (300 MiB of L3 on the machine these numbers were taken on)."""
    stacks: dict[str, list[nn.Module]] = {"msd": [], "msd_torch": [], "quantize_dynamic": []}
    for i in range(layers):
        msd, msd_torch, qd = _layers_seeded(k, n, seed=1000 + i)
        stacks["msd"].append(msd)
        stacks["msd_torch"].append(msd_torch)
        stacks["quantize_dynamic"].append(qd)
    x = torch.randn(1, k, generator=torch.Generator().manual_seed(5))

    def run(stack: list[nn.Module]) -> None:
        for layer in stack:
            layer(x)

    out: dict[str, Any] = {
        "K": k,
        "N": n,
        "layers": layers,
        "int8_weight_mib_per_stack": layers * k * n / 2**20,
        "threads": {},
    }
    for th in threads:
        torch.set_num_threads(th)
        s = interleaved({name: (lambda st=st: run(st)) for name, st in stacks.items()}, rounds=rounds, calls=1)
        cell: dict[str, Any] = {f"{name}_per_layer_ms": statistics.median(v) / layers * 1e3 for name, v in s.items()}
        for name in ("msd", "msd_torch"):
            ratios = [a / b for a, b in zip(s[name], s["quantize_dynamic"], strict=True)]
            lo, hi = _quantiles(ratios)
            cell[f"{name}_ratio_median"] = statistics.median(ratios)
            cell[f"{name}_ratio_p10_p90"] = [lo, hi]
        lo, hi = cell["msd_ratio_p10_p90"]
        out["threads"][str(th)] = cell
        print(
            f"  stack {layers} x {k}x{n} threads={th}: per layer msd {cell['msd_per_layer_ms']:.3f} ms, "
            f"qd {cell['quantize_dynamic_per_layer_ms']:.3f} ms, ratio {cell['msd_ratio_median']:.3f} "
            f"[{lo:.2f}, {hi:.2f}], torch calls {cell['msd_torch_ratio_median']:.3f}",
            flush=True,
        )
    return out


def profile_decode(msd: MSDLinear, qd: nn.Module, *, rounds: int) -> dict[str, Any]:
    """Where one M = 1 call goes: parts timed interleaved, and torch.profiler's self CPU time per op."""
    k = msd.in_features
    x = torch.randn(1, k, generator=torch.Generator().manual_seed(7))
    profile = msd.profile_for(1)
    packed = msd._scheme._segments[profile.kernel][0][2]
    comps = profile.passes_for(msd.config.passes)
    a = torch.randint(-profile.qmax, profile.qmax + 1, (comps, k), generator=torch.Generator().manual_seed(8))
    a = msd_kernels.encode_activations(a.to(torch.float32), profile)
    a1 = a[:1].contiguous()
    qd_packed = qd[0]._packed_params._packed_params
    fused, _ = msd_kernels.fused_decode_op() if profile.kernel == "fbgemm" else (None, "")
    fns = {
        "msd": lambda: msd(x),
        "quantize_dynamic": lambda: qd(x),
        "decode_fn": lambda: msd_kernels._msd_int8_decode(x, packed, comps, stacked=True, bias=None, profile=profile),
    }
    if fused is not None:
        fns["fused_op"] = lambda: fused(x, packed, comps, profile, None)
        fns["fused_op_fbgemm"] = lambda: fused(x, packed, comps, profile, None, gemv_max_rows=0)
        gemv = native.gemv_int8_op()
        a_u8 = a.to(torch.int32).add_(profile.zero_point).to(torch.uint8) if a.dtype != torch.uint8 else a
        fns[f"gemv_{comps}row"] = lambda: gemv(
            a_u8, packed.rows, packed.row_sums, packed.scale, profile.zero_point, fused.isa
        )
    fns |= {
        f"gemm_{comps}row": lambda: msd_kernels.gemm_with_profile(a, packed, profile),
        "gemm_1row": lambda: msd_kernels.gemm_with_profile(a1, packed, profile),
        "qd_op": lambda: torch.ops.quantized.linear_dynamic(x, qd_packed, True),
    }
    s = interleaved(fns, rounds=rounds, calls=10)
    parts = {name: _stats(v) for name, v in s.items()}
    med = {name: p["median_s"] for name, p in parts.items()}
    derived = {
        "msd_outside_gemm_s": med["msd"] - med[f"gemm_{comps}row"],
        "module_wrapper_s": med["msd"] - med["fused_op" if "fused_op" in med else "decode_fn"],
        "decode_ops_outside_gemm_s": med["decode_fn"] - med[f"gemm_{comps}row"],
        "qd_outside_op_s": med["quantize_dynamic"] - med["qd_op"],
        **({"fused_op_outside_gemm_s": med["fused_op"] - med[f"gemm_{comps}row"]} if "fused_op" in med else {}),
        **(
            {
                "fused_op_outside_gemv_s": med["fused_op"] - med[f"gemv_{comps}row"],
                "gemv_stacked_over_qd_op": med[f"gemv_{comps}row"] / med["qd_op"],
                "gemv_stacked_over_gemm_stacked": med[f"gemv_{comps}row"] / med[f"gemm_{comps}row"],
            }
            if "fused_op" in med
            else {}
        ),
        "gemm_stacked_over_qd_op": med[f"gemm_{comps}row"] / med["qd_op"],
        "gemm_stacked_over_gemm_1row": med[f"gemm_{comps}row"] / med["gemm_1row"],
    }
    ops: dict[str, Any] = {}
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name in ("msd", "quantize_dynamic"):
        fn = fns[name]
        with torch.no_grad(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(100):
                fn()
        table = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        ops[name] = {
            "calls": 100,
            "ops_per_call": sum(e.count for e in table) / 100,
            "self_cpu_us_per_call": {e.key: e.self_cpu_time_total / 100 for e in table[:16]},
        }
    return {"kernel": profile.kernel, "components": comps, "parts": parts, "derived": derived, "profiler": ops}


def bench_kernels(k: int, n: int, *, rounds: int) -> list[dict[str, Any]]:
    """GEMM alone per backend for 2-2048 activation rows (stacked components), the auto crossover."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    s = torch.rand(n, generator=gen) * 0.01 + 1e-3
    packs = {}
    for kern in msd_kernels.available_int8_kernels():
        prof = msd_kernels.int8_profile(kern)
        if not isinstance(prof, msd_kernels.Int8Profile):
            continue
        packs[kern] = (msd_kernels.pack_int8_weight(q, s, kern), prof)
    rows_out = []
    for rows in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        a = torch.randint(-127, 128, (rows, k), dtype=torch.int8, generator=gen)
        fns = {}
        for kern, (packed, prof) in packs.items():
            enc = msd_kernels.encode_activations(a.to(torch.float32), prof)
            fns[kern] = lambda enc=enc, packed=packed, prof=prof: msd_kernels.gemm_with_profile(enc, packed, prof)
        calls = 10 if rows <= 32 else (3 if rows <= 256 else 1)
        samp = interleaved(fns, rounds=max(7, rounds // 2), calls=calls, warmup=1)
        rows_out.append({"rows": rows, **{kern: _stats(v) for kern, v in samp.items()}})
        print(
            f"  rows {rows:4d}: "
            + "  ".join(f"{kk} {v['median_s'] * 1e3:.3f} ms" for kk, v in rows_out[-1].items() if isinstance(v, dict)),
            flush=True,
        )
    return rows_out


_MEMORY_CHILD = r"""
import gc, json, sys, torch
sys.path.insert(0, sys.argv[1])
from lowbit.msd import MSDConfig, MSDLinear
k, n, kernel = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
g = torch.Generator().manual_seed(0)
q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
sd = {"qweight": q, "weight_scale": torch.rand(n, 1) * 0.01}
def build():
    layer = MSDLinear(k, n, bias=False, config=MSDConfig(kernel=kernel))
    layer.load_state_dict(sd)
    return layer
layer = build()
del layer
gc.collect()
r0 = rss()
layers = [build() for _ in range(4)]
gc.collect()
print(json.dumps({"rss_per_layer_bytes": (rss() - r0) / 4, "memory_bytes": layers[0].memory_bytes(),
                  "kernel": layers[0].kernel}))
"""


def bench_memory(k: int, n: int) -> dict[str, Any]:
    """Resident-memory growth per INT8 layer (4 layers built in a fresh process) for each kernel setting."""
    src = os.environ.get("LOWBIT_BENCH_SRC", str(Path(__file__).resolve().parent.parent))
    out: dict[str, Any] = {"K": k, "N": n, "weight_bytes": k * n}
    for kernel in ("auto", *msd_kernels.available_int8_kernels()):
        res = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, src, str(k), str(n), kernel], capture_output=True, text=True
        )
        if res.returncode != 0:
            out[kernel] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
            continue
        out[kernel] = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"  kernel={kernel:7s} RSS/layer {out[kernel]['rss_per_layer_bytes'] / 2**20:7.1f} MiB "
            f"(weight {k * n / 2**20:.1f} MiB) {out[kernel]['memory_bytes']}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096 x 4096 only, fewer rounds")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    parser.add_argument("--profile", action="store_true", help="split an M = 1 call into parts; torch.profiler")
    parser.add_argument("--kernels", action="store_true", help="GEMM alone per backend, 2-2048 rows")
    parser.add_argument("--memory", action="store_true", help="resident memory per layer per kernel setting")
    parser.add_argument("--name", default=None, help="results file name (default msd_decode[_quick])")
    parser.add_argument(
        "--stack",
        type=int,
        default=0,
        help="also time M = 1 through this many distinct layers per setup (weights beyond the cache)",
    )
    parser.add_argument("--stack-shape", default="4096x4096", help="K x N of the --stack layers (default 4096x4096)")
    parser.add_argument("--stack-rounds", type=int, default=15, help="passes per setup for --stack (default 15)")
    parser.add_argument(
        "--shapes", default=None, help="comma-separated KxN layer shapes instead of the defaults (e.g. 2048x512)"
    )
    parser.add_argument("--ms", default=None, help="comma-separated token rows M (default 1,2,4,8)")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    kns = QUICK_KN if args.quick else FULL_KN
    if args.shapes:
        kns = tuple(tuple(int(v) for v in shape.lower().split("x")) for shape in args.shapes.split(","))
    ms = tuple(int(v) for v in args.ms.split(",")) if args.ms else MS
    rounds = 15 if args.quick else 25
    start = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    kernel_rows: dict[str, Any] = {}
    for k, n in kns:
        msd, msd_torch, qd = _layers(k, n)
        for th in threads:
            torch.set_num_threads(th)
            for m in ms:
                cell = bench_cell(msd, msd_torch, qd, m, rounds=rounds)
                rows.append({"threads": th, "K": k, "N": n, **cell})
                print(
                    f"threads={th} K={k:5d} N={n:5d} M={m}: msd {cell['msd']['median_s'] * 1e3:.3f} ms  "
                    f"qd {cell['quantize_dynamic']['median_s'] * 1e3:.3f} ms  ratio {cell['ratio_median']:.3f} "
                    f"[{cell['ratio_p10']:.2f}, {cell['ratio_p90']:.2f}]  "
                    f"torch calls {cell['torch_ratio_median']:.3f}  "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            if args.profile and (k, n) == kns[0]:
                profiles[str(th)] = profile_decode(msd, qd, rounds=rounds)
                d = profiles[str(th)]["derived"]
                print(
                    f"  profile threads={th}: "
                    + "  ".join(f"{key} {v * 1e3 if key.endswith('_s') else v:.3f}" for key, v in d.items()),
                    flush=True,
                )
            if args.kernels and (k, n) == kns[0]:
                kernel_rows[str(th)] = bench_kernels(k, n, rounds=rounds)
    memory = bench_memory(4096, 11008) if args.memory else {}
    stack_k, stack_n = (int(v) for v in args.stack_shape.lower().split("x"))
    stack = bench_stack(stack_k, stack_n, args.stack, threads, rounds=args.stack_rounds) if args.stack else {}
    header = ["threads", "K", "N", "M", "msd ms", "qd ms", "ratio", "ratio p10-p90", "torch-call ratio", "msd spread"]
    table = [
        [
            r["threads"],
            r["K"],
            r["N"],
            r["M"],
            r["msd"]["median_s"] * 1e3,
            r["quantize_dynamic"]["median_s"] * 1e3,
            r["ratio_median"],
            f"{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}",
            r["torch_ratio_median"],
            r["msd"]["spread"],
        ]
        for r in rows
    ]
    print_table(header, table)
    name = args.name or ("msd_decode_quick" if args.quick else "msd_decode")
    path = write_results(
        name,
        {
            "quick": args.quick,
            "argv": list(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__,
            "threads": threads,
            "rounds": rounds,
            "calls_per_sample": 10,
            "fused_decode_op": msd_kernels.fused_decode_op()[1],
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "rows": rows,
            "profile": profiles,
            "kernels": kernel_rows,
            "memory": memory,
            "stack": stack,
            "seconds": time.perf_counter() - start,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
