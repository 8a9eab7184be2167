"""Report section "attention": quantized-KV error table (dequant vs MSD), AMLA error table, bit-identity check."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from lowbit.attention.amla import mul_pow2_via_int_add
from lowbit.lab.attention.amla_errors import AmlaErrorRow, amla_error_table
from lowbit.lab.attention.kv_errors import KVErrorRow, kv_error_table
from lowbit.lab.report.section import Section, SectionContext, SectionOutput
from lowbit.lab.report.stored import provenance

_RESULTS = "attention.json"


def bit_identity_check(seed: int, n: int = 1 << 20) -> dict[str, int]:
    """Mismatches of the integer-add rescale vs ``x * 2^k`` on ``n`` float32 values of magnitude e^±20."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g) * 40.0 - 20.0).exp() * torch.sign(torch.randn(n, generator=g))
    x = x.to(torch.float32)
    out = {}
    for k in (-30, -7, -1, 0, 1, 5):
        got = mul_pow2_via_int_add(x, k)
        want = x * torch.tensor(2.0**k, dtype=torch.float32)
        out[str(k)] = int((got.view(torch.int32) != want.view(torch.int32)).sum())
    return out


def _kv_figure(rows: list[KVErrorRow]) -> Figure:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, what in zip(axes, ("method", "total"), strict=True):
        for i, cache in enumerate(sorted({r.cache for r in rows})):
            for dim, marker in ((64, "o"), (128, "s")):
                sel = sorted((r for r in rows if r.cache == cache and r.dim == dim), key=lambda r: r.seq_k)
                if not sel:
                    continue
                xs = [r.seq_k for r in sel]
                ax.plot(
                    xs,
                    [getattr(r, f"dequant_{what}") for r in sel],
                    f"-{marker}",
                    color=f"C{i}",
                    ms=4,
                    label=f"{cache} d{dim} dequant",
                )
                ax.plot(
                    xs,
                    [getattr(r, f"msd_{what}") for r in sel],
                    f"--{marker}",
                    color=f"C{i}",
                    ms=4,
                    label=f"{cache} d{dim} MSD",
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("KV sequence length")
        ax.set_ylabel("relative L2 error")
        ax.set_title(f"{what} error (dequant solid, MSD dashed)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def run(ctx: SectionContext) -> SectionOutput:
    """Compute the tables (small grid with ``ctx.quick``) and show the stored full benchmark if present."""
    out = SectionOutput()
    out.text(
        "Attention over a quantized KV cache (msd.md §9) and AMLA's integer-add rescale (amla.md). Errors are "
        "relative L2 against float64 softmax attention. 'total' compares with attention over the unquantized "
        "K, V; 'method' with attention over the dequantized cache, i.e. the error each method adds."
    )
    seqs, dims = ((1024, 4096), (128,)) if ctx.quick else ((1024, 4096, 16384), (64, 128))
    rows = kv_error_table(seqs, dims, seed=ctx.seed)
    out.table(
        list(KVErrorRow.HEADER),
        [r.cells() for r in rows],
        caption="Decode, 8 query / 2 KV heads, keys with 4 outlier channels (8·k + 4)",
    )
    out.figure(_kv_figure(rows), caption="Quantized-KV attention error vs sequence length")
    amla_rows = amla_error_table(
        (4096,) if ctx.quick else (4096, 32768), seq_qs=(1,) if ctx.quick else (1, 2), seed=ctx.seed
    )
    out.table(
        list(AmlaErrorRow.HEADER),
        [r.cells() for r in amla_rows],
        caption="AMLA on DeepSeek-V3 absorbed-MLA decode (128 heads, 576/512 dims, scale 0.1352, block 512)",
    )
    ident = bit_identity_check(ctx.seed)
    out.text(
        "Integer-add rescale vs multiplication by 2^k on 2^20 float32 values of magnitude e^±20, mismatching "
        f"bit patterns per k: {ident} (0 = bit-identical)."
    )
    summary: dict[str, object] = {
        "kv": [r.cells() for r in rows],
        "kv_header": list(KVErrorRow.HEADER),
        "amla": [r.cells() for r in amla_rows],
        "amla_header": list(AmlaErrorRow.HEADER),
        "bit_identity_mismatches": ident,
        "msd_method_le_dequant_fraction_int8": _fraction(rows, "int8"),
    }
    data = ctx.results.load(_RESULTS)
    if data is not None:
        kv = data.get("kv", [])
        out.text(
            f"{provenance(data, _RESULTS, ctx.results)} These are errors, not timings: the live tables above "
            "recompute the small grid on this machine."
        )
        out.table(
            data.get("kv_header", list(KVErrorRow.HEADER)),
            kv,
            caption=f"Full grid from {_RESULTS} (written {data.get('written', '?')})",
        )
        if data.get("amla"):
            out.table(
                data.get("amla_header", list(AmlaErrorRow.HEADER)),
                data["amla"],
                caption=f"AMLA full grid from {_RESULTS}",
            )
        summary["benchmark_rows"] = len(kv)
        summary["benchmark_source"] = str(ctx.results.file(_RESULTS))
    else:
        out.text(
            f"The full grid (up to 32K keys) is not in {ctx.results.describe()}: "
            f"{ctx.results.rerun_hint('bench_attention.py')}."
        )
        summary["benchmark_rows"] = 0
    out.summary.update(summary)
    return out


def _fraction(rows: list[KVErrorRow], fmt: str) -> float:
    sel = [r for r in rows if r.cache.startswith(fmt)]
    return sum(r.msd_method <= r.dequant_method for r in sel) / len(sel) if sel else float("nan")


SECTION = Section(name="attention", title="Attention: quantized KV (dequant vs MSD) and AMLA", order=50, run=run)
