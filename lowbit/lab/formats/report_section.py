"""Report section "formats": the format table, a live bit-exactness check against ml_dtypes, the representable
values of each element format, and round-trip errors on Gaussian data (``docs/methods/msd.md`` §4-§7, on
"Multi-Scale Dequant: Eliminating Dequantization Bottleneck via Activation Decomposition for Efficient LLM
Inference", arXiv:2605.13915).

>>> {name: v["mismatches"] for name, v in exactness_check(seed=0, n_random=100).items()}
{'e2m1': 0, 'e2m3': 0, 'e3m2': 0, 'e4m3': 0, 'e5m2': 0}
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import torch
from matplotlib.figure import Figure

from lowbit.formats import ELEMENT_FORMATS, element_values, encode_element
from lowbit.formats.catalog import FORMAT_HEADER, format_table
from lowbit.lab.formats.roundtrip import RoundTrip, roundtrip_errors
from lowbit.lab.report.section import Section, SectionContext, SectionOutput

_ML_DTYPES = {
    "e2m1": ml_dtypes.float4_e2m1fn,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}

# docs/methods/msd.md §7 [measured], Gaussian data, blocks of 32: -log2(relative RMS).
_MSD_NOTE_BITS = {"mxfp8_e4m3 (ceil)": 5.23, "mxfp8_e4m3 (ocp)": 5.09, "mxfp4_e2m1 (ceil)": 3.12}


def exactness_check(seed: int, n_random: int) -> dict[str, dict[str, int]]:
    """Codes of :func:`encode_element` vs ``ml_dtypes`` (saturating: clip, then cast) per element format.

    Inputs: every code's value, every midpoint between neighbours and one float32 ulp either side, both signs,
    and ``n_random`` float32 values of magnitude 2^-30..2^20. NaN codes compare as equal.
    """
    rng = np.random.default_rng(seed)
    rand = (np.exp2(rng.uniform(-30, 20, n_random)) * rng.choice([-1.0, 1.0], n_random)).astype(np.float32)
    out = {}
    for name, dt in _ML_DTYPES.items():
        f = ELEMENT_FORMATS[name]
        grid = element_values(f).numpy()
        pos = np.unique(grid[np.isfinite(grid) & (grid >= 0)])
        mids = ((pos[:-1] + pos[1:]) / 2).astype(np.float32)
        near = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
        x = np.concatenate([pos, -pos, near, -near, rand]).astype(np.float32)
        ref = np.clip(x, -f.max_normal, f.max_normal).astype(dt).view(np.uint8)
        ours = encode_element(torch.from_numpy(x), f).numpy()
        out[name] = {"values": int(x.size), "mismatches": int((ours != ref).sum())}
    return out


def _values_figure() -> Figure:
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    for i, f in enumerate(ELEMENT_FORMATS.values()):
        v = element_values(f).numpy()
        v = v[np.isfinite(v) & (v > 0)]
        ax.plot(v, np.full_like(v, i), "|", ms=14, color=f"C{i}")
        ax.annotate(f"max {f.max_normal:g}", (f.max_normal, i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yticks(range(len(ELEMENT_FORMATS)), list(ELEMENT_FORMATS))
    ax.set_ylim(-0.7, len(ELEMENT_FORMATS) - 0.3)
    ax.set_xlabel("positive finite value (log2 axis); subnormals at the left, max normal at the right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _error_figure(rows: list[RoundTrip]) -> Figure:
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    colors = {"MX": "C0", "INT": "C1", "FP8": "C2", "NVFP4": "C3"}
    names = [r.scheme for r in rows]
    ax.barh(names, [r.bits for r in rows], color=[colors[r.family] for r in rows])
    for i, r in enumerate(rows):
        ax.text(r.bits + 0.05, i, f"{r.bits:.2f} bits @ {r.bits_per_element:g} b/elem", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("-log2(relative RMS round-trip error), Gaussian data (higher is better)")
    ax.set_xlim(0, max(r.bits for r in rows) + 2.5)
    ax.grid(axis="x", alpha=0.3)
    return fig


def run(ctx: SectionContext) -> SectionOutput:
    """Tables and plots of the formats; quick: 128x4096 Gaussian values, full: 1024x4096."""
    out = SectionOutput()
    out.text(
        "Bit-exact number formats (lowbit.formats): symmetric INT8/INT4, FP8 E4M3FN/E5M2, OCP MX v1.0 "
        "(MXFP8/MXFP6/MXFP4 with a shared E8M0 scale per 32 elements, OCP and non-saturating 'ceil' scale rules) "
        "and NVFP4. Rounding is round-to-nearest-even; FP8 and MX elements saturate to ±max normal."
    )
    out.table(
        FORMAT_HEADER,
        [r.cells() for r in format_table()],
        caption="Formats (INT rows: max = qmax, step 1 before scaling; bits/elem includes amortised scales)",
    )

    check = exactness_check(ctx.seed, 20_000 if ctx.quick else 200_000)
    out.table(
        ["element", "values checked", "code mismatches vs ml_dtypes"],
        [[k, v["values"], v["mismatches"]] for k, v in check.items()],
        caption="Live bit-exactness check: every code, every midpoint (±1 ulp), random float32 magnitudes",
    )
    out.figure(_values_figure(), "Representable positive values of each element format")

    rows_n = 128 if ctx.quick else 1024
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(rows_n, 4096, generator=g).to(torch.bfloat16).to(torch.float32)
    rows = roundtrip_errors(x)
    out.table(
        ["scheme", "bits/elem", "rel. RMS", "-log2 rel. RMS", "max |e| / group amax", "methods/msd.md §7 [measured]"],
        [
            [r.scheme, r.bits_per_element, r.rel_rms, r.bits, r.worst_rel_amax, _MSD_NOTE_BITS.get(r.scheme, "")]
            for r in rows
        ],
        caption=f"Round-trip error on {rows_n}x4096 BF16-rounded N(0,1) values (MX block 32, INT group 128)",
    )
    out.figure(_error_figure(rows), "Round-trip error in bits, by scheme")
    out.text(
        "Reading: MXFP8 E4M3 with the ceil rule gives about 5.23 bits (docs/methods/msd.md §6: analytic 5.236); "
        "the OCP rule saturates block maxima and loses about 0.14 bits on E4M3. E2M3 has no such loss because its "
        "max normal 7.5 is close to 2^(emax+1) = 8. FP8 without a scale matches MXFP8 here only because N(0,1) "
        "sits inside the E4M3 normal range."
    )
    out.summary = {
        "data": f"{rows_n}x4096 bf16-rounded gaussian, seed {ctx.seed}",
        "exactness_mismatches": {k: v["mismatches"] for k, v in check.items()},
        "roundtrip_bits": {r.scheme: round(r.bits, 4) for r in rows},
        "roundtrip_rel_rms": {r.scheme: r.rel_rms for r in rows},
        "bits_per_element": {r.scheme: r.bits_per_element for r in rows},
        "all_exact": all(v["mismatches"] == 0 for v in check.values()),
        "finite": all(math.isfinite(r.rel_rms) for r in rows),
    }
    return out


SECTION = Section(name="formats", title="Number formats: INT, FP8, MX, NVFP4", order=10, run=run)
