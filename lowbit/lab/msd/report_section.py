"""Report section "msd": effective bits vs the paper, error vs passes, and the matmul accuracy study.

The MSD method note (msd.md) §7 (effective bits, the 6.6 question) and §8 (accuracy against dequant baselines).
"""

from __future__ import annotations

from typing import Any

from lowbit.lab.msd.distributions import DISTRIBUTIONS
from lowbit.lab.msd.study import (
    accuracy_study,
    bits_table,
    explain_six_six,
    passes_sweep,
    six_six_search,
    summarize_accuracy,
)
from lowbit.lab.report.section import Section, SectionContext, SectionOutput

_QUICK_SHAPES = ((1, 2048, 256), (16, 2048, 256), (256, 1024, 128))
_FULL_SHAPES = ((1, 4096, 512), (16, 4096, 512), (256, 4096, 256), (2048, 1024, 128), (16, 16384, 128))


def _passes_figure(sweep: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for fmt, color in (("int8", "C0"), ("mxfp4", "C1"), ("mxfp8", "C2")):
        rows = [r for r in sweep if r["fmt"] == fmt]
        p = [r["passes"] for r in rows]
        ax1.plot(p, [r["worst"] for r in rows], "o-", color=color, label=f"{fmt} measured worst case")
        ax1.plot(p, [r["bound"] for r in rows], "--", color=color, alpha=0.6, label=f"{fmt} bound")
        ax1.plot(p, [r["rms"] for r in rows], "s:", color=color, alpha=0.8, label=f"{fmt} -log2 rel RMS")
        ax2.semilogy(p, [r["rel_l2"] for r in rows], "o-", color=color, label=fmt)
    for ax in (ax1, ax2):
        ax.set_xticks(sorted({r["passes"] for r in sweep}))
    ax1.set_xlabel("passes")
    ax1.set_ylabel("effective bits")
    ax1.legend(fontsize=6, ncol=1)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("passes")
    ax2.set_ylabel("relative L2 error of x_hat")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def _accuracy_figure(rows: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["weight"] for r in rows})
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.6), squeeze=False)
    for col, kind in enumerate(kinds):
        sub = [r for r in rows if r["weight"] == kind]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        for row, (key, label) in enumerate(
            (("rel_l2_q", "rel. L2 vs same quantized W"), ("rel_l2_w", "rel. L2 vs unquantized W"))
        ):
            ax = axes[row][col]
            for mi, meth in enumerate(methods):
                pts = [r for r in sub if r["method"] == meth]
                xs = [DISTRIBUTIONS.index(r["dist"]) + (mi - len(methods) / 2) * 0.12 for r in pts]
                ax.semilogy(xs, [r[key] for r in pts], "o", ms=3, label=meth)
            ax.set_xticks(range(len(DISTRIBUTIONS)), DISTRIBUTIONS, rotation=30, fontsize=7)
            ax.set_title(f"{kind}: {label}", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            if row == 0:
                ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def run(ctx: SectionContext) -> SectionOutput:
    """Compute the three MSD studies (smaller in quick mode) and lay them out."""
    out = SectionOutput()
    rows, k = (16, 2048) if ctx.quick else (64, 4096)
    table = bits_table(rows=rows, k=k, seed=ctx.seed)
    search = six_six_search(rows=rows, k=k, seed=ctx.seed)
    sweep = passes_sweep(rows=rows, k=k, seed=ctx.seed)
    out.text(
        f"Effective bits of the MSD activation decompositions on {rows}x{k} BF16 activations per distribution. "
        "Worst case: INT8 log2(M / max|e|) per group (row or K-block), MX -log2(max|e| / alpha) per 32-block with "
        "alpha = 2^(floor(log2 amax)+1); RMS: -log2 of the relative L2 error. Paper: 16 / 6.6 / 5.24."
    )
    out.table(
        ["scheme", "dist", "worst-case bits", "bound bits", "-log2 rel RMS", "rel L2", "ENOB", "paper"],
        [
            [r["scheme"], r["dist"], r["worst"], r["bound"], r["rms"], r["rel_l2"], r["enob"], r["paper"] or "-"]
            for r in table
        ],
        caption="Effective bits: format x passes x distribution, both definitions",
    )
    out.text(explain_six_six(table, search))
    out.table(
        ["definition", "closest dist for 5.24", "MXFP8 x1", "closest dist for 6.6", "MXFP4 x2"],
        [
            [name, v["mxfp8_best"][0], v["mxfp8_best"][1], v["mxfp4_best"][0], v["mxfp4_best"][1]]
            for name, v in search["across_dists"].items()
        ],
        caption="The 6.6 search: per candidate definition, the distribution closest to each headline",
    )
    out.figure(
        _passes_figure(sweep),
        caption="Error against the number of passes (Gaussian, float32 activations), with the bounds",
    )

    shapes = _QUICK_SHAPES if ctx.quick else _FULL_SHAPES
    acc = accuracy_study(shapes=shapes, seed=ctx.seed)
    summary = summarize_accuracy(acc)
    out.text(
        "Matmul accuracy: BF16 activations, N(0, 0.02^2) weights, float32 recombination; errors against a float64 "
        "product with the same quantized weights (q) and with the unquantized weights (w). Shapes (M, K, N): "
        + ", ".join(str(s) for s in shapes)
        + ". Full study: benchmarks/bench_msd_accuracy.py."
    )
    out.table(
        [
            "weight",
            "method",
            "cases",
            "rel L2 vs q (gmean)",
            "max err vs q (worst)",
            "rel L2 vs w (gmean)",
            "not worse than dequant vs w",
            "lower than dequant vs q",
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
        caption="MSD matmul against the dequant baselines (max error normalised by max |reference|)",
    )
    out.figure(_accuracy_figure(acc), caption="Relative L2 error per distribution and method")

    def pick(scheme: str, dist: str, key: str) -> float:
        return next(r[key] for r in table if r["scheme"] == scheme and r["dist"] == dist)

    out.summary = {
        "activation_shape": [rows, k],
        "int8_x2_worst_bits": min(r["worst"] for r in table if r["scheme"] == "int8 x2"),
        "mxfp8_x1_rms_bits_gaussian": pick("mxfp8 x1 (ceil)", "gaussian", "rms"),
        "mxfp4_x2_worst_bits": min(r["worst"] for r in table if r["scheme"] == "mxfp4 x2 (ceil)"),
        "mxfp4_x2_rms_bits": {d: pick("mxfp4 x2 (ceil)", d, "rms") for d in DISTRIBUTIONS},
        "mxfp4_x2_ocp_worst_bits": min(r["worst"] for r in table if r["scheme"] == "mxfp4 x2 (ocp)"),
        "six_six_same_data_matches": len(search["matches"]),
        "six_six_best": search["best"],
        "six_six_per_element_model": search["per_element_model"],
        "accuracy": summary,
    }
    return out


SECTION = Section(name="msd", title="MSD: multi-scale dequant accuracy and effective bits", order=30, run=run)
