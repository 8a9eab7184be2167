"""Report section "costmodel": presets, dequant-vs-MSD tables and plots, CPU predicted vs measured."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lowbit._atomic import atomic_write_text
from lowbit.costmodel.hardware import PRESETS
from lowbit.costmodel.models import MODELS
from lowbit.costmodel.plots import latency_figure
from lowbit.costmodel.tables import attention_table, hardware_table, kv_bytes_table, linear_table
from lowbit.lab.costmodel.calibrate import CpuCalibration, calibrate_cpu, calibration_from_dict
from lowbit.lab.costmodel.cpu_check import NOT_MEASURED, CpuComparison, compare_cpu, measured_rows
from lowbit.lab.report.machine import cpu_model
from lowbit.lab.report.section import Section, SectionContext, SectionOutput
from lowbit.lab.report.stored import machine_caveat, provenance, stored_cpu

MSD_LINEAR = "msd_linear.json"
COSTMODEL_RESULTS = "costmodel.json"


def benchmark_calibration(data: Mapping[str, Any] | None) -> CpuCalibration | None:
    """The calibration stored by ``benchmarks/bench_costmodel.py`` (taken under the benchmark lock), if any."""
    if data is None or "calibration" not in data:
        return None
    return calibration_from_dict(data["calibration"])


def cached_calibration(ctx: SectionContext) -> CpuCalibration:
    """Calibrate this CPU once per report and keep the result in the report's output folder."""
    path = ctx.out_dir / "costmodel_cpu_calibration.json"
    cal = calibrate_cpu(quick=ctx.quick, seed=ctx.seed)
    atomic_write_text(path, json.dumps(cal.as_dict(), indent=2))
    return cal


def run(ctx: SectionContext) -> SectionOutput:
    """Tables and plots of the [inferred] model, then the model checked against this CPU."""
    out = SectionOutput()
    out.text(
        "Closed-form latency / HBM-traffic model of dequant vs MSD, an [inferred] reconstruction of msd.md §10: "
        "every kernel is a sequence of roofline ops max(bytes/BW, vector ops/V, matrix ops/P), run one after "
        "another. Hardware figures from msd.md §11 with their status; vector rates are [inferred]."
    )
    cal = cached_calibration(ctx)
    cpu = cal.to_hardware()
    hws = [*PRESETS.values(), cpu]
    header, rows = hardware_table(hws)
    out.table(header, rows, caption="Hardware presets (cpu: calibrated in this run)")
    header, rows = kv_bytes_table()
    out.table(
        header,
        rows,
        caption="Bytes per KV element in decode: INT8 decoupled dequant 5 B vs MSD 2 passes 2 B "
        "= 2.5x (the paper's 'up to 2.5x'); 5x when the passes are stacked",
    )
    ms = (1, 16, 256, 4096) if ctx.quick else (1, 4, 16, 64, 256, 1024, 4096)
    seqs = (4096, 32768) if ctx.quick else (1024, 4096, 16384, 32768, 131072)
    models = ("llama-3-8b", "deepseek-v3") if ctx.quick else tuple(MODELS)
    summary: dict[str, object] = {"kv_ratio_int8_stream": rows[0][2] / rows[2][2]}
    for name in models:
        model = MODELS[name]
        h, r = linear_table(hws, model, ms=ms)
        out.table(h, r, caption=f"{name}: all linear layers of one transformer layer")
        h2, r2 = attention_table(hws, model, seqs=seqs)
        out.table(h2, r2, caption=f"{name}: decode attention of one layer over an INT8 cache ({model.attention.name})")
        out.figure(
            latency_figure(model, [*PRESETS.values()], ms=ms, seqs=seqs),
            caption=f"{name}: latency vs M and vs sequence length (W8A16 / INT8 KV)",
        )
        summary[f"{name}_msd_speedup_m1_ascend910b"] = next(
            row[5] for row in r if row[0] == "ascend-910b" and row[1] == "W8A16" and row[2] == 1
        )
    out.table(
        ["path", *(f"M={m} GOP/s" for m in cal.ms)],
        [[p, *(v / 1e9 for v in rates)] for p, rates in cal.gemm_ops.items()]
        + [[p, f"failed: {e}"] for p, e in cal.failed.items()],
        caption=f"CPU calibration (K=N={cal.k}): bandwidth {cal.bandwidth / 1e9:.2f} GB/s, INT8->BF16 dequant "
        f"{cal.dequant_rate / 1e9:.3f} G elem/s, two-pass decomposition {cal.decompose_rate / 1e6:.2f} M elem/s",
    )
    stored = ctx.results.load(MSD_LINEAR)
    if stored is None:
        out.text(
            f"CPU predicted vs measured MSD speedup: {NOT_MEASURED}: {ctx.results.describe()} has no {MSD_LINEAR} "
            f"(the MSDLinear benchmark); {ctx.results.rerun_hint('bench_msd_linear.py')}."
        )
        summary["cpu_check"] = NOT_MEASURED
    else:
        summary.update(_cpu_check(out, ctx, cal, stored))
    summary["calibration_seconds"] = cal.seconds
    out.summary.update(summary)
    return out


def _cpu_check(out: SectionOutput, ctx: SectionContext, cal: CpuCalibration, stored: dict[str, Any]) -> dict[str, Any]:
    """Predicted vs stored measured speedups, with the machine each figure comes from.

    The prediction uses the calibration stored beside the timings when both record the same CPU (taken under the
    benchmark lock on that machine), else this report's live calibration, which is then compared with timings of
    another machine only with an explicit "not comparable".
    """
    measured = measured_rows(stored, ctx.results.file(MSD_LINEAR))
    bench_data = ctx.results.load(COSTMODEL_RESULTS)
    bench_cal = benchmark_calibration(bench_data)
    if bench_cal is not None and stored_cpu(bench_data) != stored_cpu(stored):
        bench_cal = None  # a calibration of another CPU than the one that measured: not used
    here = cpu_model()
    if bench_cal is not None:
        which = (
            f"the calibration stored in {COSTMODEL_RESULTS} on the machine that measured the timings "
            f"({stored_cpu(stored)}, taken under the benchmark lock)"
        )
        comparable = True
        caveat = (
            f"Prediction and measurement both come from the stored machine (CPU {stored_cpu(stored)}), not from this "
            f"machine (CPU {here}); this machine's own calibration is the table above."
        )
    else:
        which = "this report's live calibration (other processes running at the same time inflate small GEMMs)"
        comparable, caveat = machine_caveat(stored, here)
    out.text(f"{provenance(stored, MSD_LINEAR, ctx.results)} {caveat}")
    comp = compare_cpu(bench_cal or cal, measured)
    out.table(
        list(CpuComparison.HEADER),
        [c.cells() for c in comp],
        caption=f"CPU: predicted vs measured ({MSD_LINEAR}, CPU {stored_cpu(stored) or '?'}) MSD speedup over BF16 "
        f"dequant; prediction from {which}" + ("" if comparable else " — NOT COMPARABLE: measured on another machine"),
    )
    return {
        "cpu_check_calibration": "benchmark" if bench_cal is not None else "report",
        "cpu_check_comparable": comparable,
        "cpu_check_measured_on": stored_cpu(stored),
        "cpu_check": [
            {"M": c.m, "K": c.k, "N": c.n, "pred": c.predicted_speedup, "meas": c.measured_speedup} for c in comp
        ],
    }


SECTION = Section(name="costmodel", title="Cost model: dequant vs MSD latency and HBM traffic", order=55, run=run)
