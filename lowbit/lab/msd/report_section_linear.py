"""Report section "msd-linear": speed and accuracy of MSD INT8 linear layers against float and dequant baselines.

Shows the stored full benchmark ``msd_linear.json`` (``benchmarks/bench_msd_linear.py``) from the report's
results folder (:mod:`lowbit.lab.report.stored`: packaged with lowbit, or ``lowbit report --results DIR``) with the
machine it ran on; always adds a small live measurement on this machine, and says whether the two are comparable.
Columns and definitions as in the benchmark: the same per-channel INT8 weights for every column, relative error
against the float64 product with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowbit._timing import Timing, measure
from lowbit.lab.report.machine import cpu_model
from lowbit.lab.report.section import Section, SectionContext, SectionOutput
from lowbit.lab.report.stored import machine_caveat, provenance

COLUMNS = ("fp32", "bf16", "dequant_bf16", "dequant_fp32", "w8a16_fused", "quantize_dynamic", "msd")
RESULTS = "msd_linear.json"


def _measure(fn: Callable[[], Any], repeats: int) -> Timing:
    """``repeats`` timed calls after two untimed ones (the first call of a kernel builds its oneDNN primitive)."""
    return measure(fn, repeats=repeats, warmup=2)


def measure_shape(m: int, k: int, n: int, *, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Time and error of the six main columns for one ``M x K x N`` shape (one row of the results schema, plus
    ``timings``: every column's samples, spread and noisy flag)."""
    import warnings

    from lowbit.msd import MSDConfig, MSDLinear

    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.02)
    x = torch.randn(m, k, generator=gen)
    msd = MSDLinear.from_linear(lin, MSDConfig())
    deq = MSDLinear.from_linear(lin, MSDConfig(method="dequant"))
    w_tilde = msd.dequantized_weight(torch.float32)
    ref = x.double() @ msd.dequantized_weight(torch.float64).t()
    fp32 = nn.Linear(k, n, bias=False)
    bf16 = nn.Linear(k, n, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        fp32.weight.copy_(w_tilde)
        bf16.weight.copy_(w_tilde.to(torch.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        qd = quantize_dynamic(nn.Sequential(fp32), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    xb = x.to(torch.bfloat16)
    fns = {
        "fp32": lambda: fp32(x),
        "bf16": lambda: bf16(xb),
        "dequant_bf16": lambda: deq(xb),
        "dequant_fp32": lambda: deq(x),
        "quantize_dynamic": lambda: qd(x),
        "msd": lambda: msd(x),
    }
    if hasattr(torch, "_weight_int8pack_mm"):  # torch's fused CPU W8A16 kernel (bf16 activations and scales)
        q8, s8 = msd.qweight, msd.weight_scale[:, 0].to(torch.bfloat16).contiguous()
        fns["w8a16_fused"] = lambda: torch._weight_int8pack_mm(xb, q8, s8)
    times, errs, timings = {}, {}, {}
    with torch.no_grad():
        for name, fn in fns.items():
            y = fn().double()
            errs[name] = float((y - ref).norm() / ref.norm())
            timing = _measure(fn, repeats)
            times[name], timings[name] = timing.median, timing.as_dict()
    return {
        "M": m,
        "K": k,
        "N": n,
        "times_s": times,
        "timings": timings,
        "rel_err": errs,
        "kernel": f"{msd.kernel_for(m)}/{msd.stacking_for(m)}",
    }


def _table(out: SectionOutput, rows: list[dict[str, Any]], caption: str) -> None:
    header = ["M", "K", "N", *[f"{c} ms" for c in COLUMNS], "x fp32", "x best dequant", "x fused"]
    header += ["msd err", "qd err", "bits +"]
    body = []
    for r in rows:
        t, e, live = r["times_s"], r["rel_err"], r.get("timings", {})
        dq = min(t["dequant_bf16"], t["dequant_fp32"])
        fused = t["w8a16_fused"] / t["msd"] if "w8a16_fused" in t else "-"
        body.append(
            [
                *(r["M"], r["K"], r["N"]),
                *[out.timing(live[c], "ms") if c in live else t[c] * 1e3 if c in t else "-" for c in COLUMNS],
                *(t["fp32"] / t["msd"], dq / t["msd"], fused, e["msd"], e["quantize_dynamic"]),
                math.log2(e["quantize_dynamic"] / e["msd"]),
            ]
        )
    out.table(header, body, caption)


def _figure(out: SectionOutput, rows: list[dict[str, Any]], caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["K"], r["N"]) for r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 3.8), squeeze=False)
    for ax, (k, n) in zip(axes[0], shapes, strict=True):
        sub = sorted((r for r in rows if (r["K"], r["N"]) == (k, n)), key=lambda r: r["M"])
        for c in (c for c in COLUMNS if all(c in r["times_s"] for r in sub)):
            ax.plot([r["M"] for r in sub], [r["times_s"][c] * 1e3 for r in sub], marker="o", label=c)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("time (ms)")
        ax.set_title(f"K={k}, N={n}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    out.figure(fig, caption)


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    res = []
    for r in rows:
        t, e = r["times_s"], r["rel_err"]
        res.append(
            {
                "M": r["M"],
                "K": r["K"],
                "N": r["N"],
                "speedup_vs_fp32": t["fp32"] / t["msd"],
                "speedup_vs_best_dequant": min(t["dequant_bf16"], t["dequant_fp32"]) / t["msd"],
                "msd_rel_err": e["msd"],
                "bits_gain_vs_quantize_dynamic": math.log2(e["quantize_dynamic"] / e["msd"]),
            }
        )
    return res


def run(ctx: SectionContext) -> SectionOutput:
    """Table and plot from the stored benchmark (if any) plus a live measurement sized by ``ctx.quick``."""
    out = SectionOutput()
    out.text(
        "MSD W8A16 on the CPU: the activation is split per token into two INT8 components, each multiplied with "
        "the per-channel INT8 weight in a prepacked VNNI INT8 GEMM (fbgemm for decode, oneDNN above), recombined "
        "in float32. Baselines use the same INT8 weights (w8a16_fused: torch._weight_int8pack_mm, torch's fused "
        "CPU weight-only kernel); errors are relative L2 against the float64 product with "
        "them; 'bits +' is the effective-bit gain over torch.ao quantize_dynamic (one dynamic 8-bit activation pass)."
    )
    data = ctx.results.load(RESULTS)
    if data is not None:
        rows = data["rows"]
        comparable, caveat = machine_caveat(data, cpu_model())
        out.text(f"{provenance(data, RESULTS, ctx.results)} {caveat}")
        _table(out, rows, f"Stored benchmark ({RESULTS}, measured on {data.get('machine', {}).get('cpu', '?')})")
        _figure(out, rows, "Stored benchmark: time against M per column")
        out.summary["stored"] = _summary(rows)
        out.summary["stored_source"] = str(ctx.results.file(RESULTS))
        out.summary["stored_comparable_with_live"] = comparable
        e2e = data.get("e2e") or {}
        if "speedup_msd_vs_fp32" in e2e:
            out.text(
                f"End-to-end prefill ({e2e['seq']} tokens, Llama-architecture model {e2e['config']}): MSD "
                f"{e2e['speedup_msd_vs_fp32']:.2f}x vs float32, {e2e['speedup_msd_vs_dequant_fp32']:.2f}x vs dequant."
            )
            out.summary["e2e"] = {k: v for k, v in e2e.items() if k != "config"}
    else:
        out.text(
            f"No stored benchmark: {ctx.results.describe()} has no {RESULTS}. For the full table "
            f"{ctx.results.rerun_hint('bench_msd_linear.py')}."
        )
    ms = (1, 32, 256) if ctx.quick else (1, 8, 32, 128, 512)
    k, n = (2048, 2048) if ctx.quick else (4096, 4096)
    live = [measure_shape(m, k, n, repeats=3 if ctx.quick else 5, seed=ctx.seed) for m in ms]
    _table(out, live, f"Live measurement on this machine (CPU {cpu_model()}, K=N={k})")
    _figure(out, live, "Live measurement: time against M per column")
    out.summary["live"] = _summary(live)
    return out


SECTION = Section(name="msd-linear", title="MSD linear layers on the CPU (INT8 VNNI)", order=40, run=run)
