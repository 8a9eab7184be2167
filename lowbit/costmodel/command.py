"""``lowbit cost``: the latency/HBM-traffic model's tables (and plots) for a named model shape."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowbit.cli_tables import int_list, print_rich_table
from lowbit.costmodel.hardware import PRESETS, Hardware, get_hardware
from lowbit.costmodel.models import MODELS, get_model
from lowbit.costmodel.tables import (
    DEFAULT_MS,
    DEFAULT_SEQS,
    attention_table,
    hardware_table,
    kv_bytes_table,
    linear_table,
)

if TYPE_CHECKING:
    from lowbit.costmodel.calibrate import CpuCalibration

MSD_LINEAR = "msd_linear.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lowbit cost``."""
    p = subparsers.add_parser(
        "cost",
        help="latency / HBM-traffic model of dequant vs MSD (linear layers, decode attention)",
        description="Closed-form latency and HBM traffic of W8A16/W4A16 linear layers and of decode attention over "
        "a quantized KV cache, dequant vs MSD (msd.md §10, [inferred] reconstruction).",
    )
    p.add_argument("--model", default="llama-3-8b", choices=sorted(MODELS), help="model shape (default llama-3-8b)")
    p.add_argument(
        "--hardware",
        default="ascend-910b,ascend-950pr,h100-sxm,h200",
        help=f"comma-separated presets ({', '.join(sorted(PRESETS))}), 'cpu' (calibrated now) or .toml files",
    )
    p.add_argument("--ms", type=int_list, default=list(DEFAULT_MS), help="token counts M, comma-separated")
    p.add_argument("--seqs", type=int_list, default=list(DEFAULT_SEQS), help="KV lengths, comma-separated")
    p.add_argument("--plot", type=Path, default=None, help="write latency-vs-M and latency-vs-length PNG here")
    p.add_argument(
        "--compare-cpu",
        action="store_true",
        help="calibrate this CPU and compare predicted vs measured MSD speedup (msd_linear.json of --results; "
        "timings measured on another machine are flagged as not comparable)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="stored benchmark results to read msd_linear.json from (default: the copies packaged with lowbit)",
    )
    p.add_argument(
        "--msd-linear",
        type=Path,
        default=None,
        metavar="FILE",
        help="MSDLinear benchmark results (overrides --results)",
    )
    p.add_argument("--quick", action="store_true", help="quick CPU calibration")
    p.add_argument("--json", type=Path, default=None, help="also write all tables as JSON here")
    p.set_defaults(func=run)


def resolve_hardware(spec: str, *, quick: bool) -> tuple[list[Hardware], object]:
    """Hardware list from the ``--hardware`` text; calibrates the CPU when ``cpu`` is named."""
    from lowbit.costmodel.calibrate import calibrate_cpu

    hws, cal = [], None
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name == "cpu":
            cal = calibrate_cpu(quick=quick)
            hws.append(cal.to_hardware())
        else:
            hws.append(get_hardware(name))
    if not hws:
        raise ValueError("--hardware names no device")
    return hws, cal


def run(args: argparse.Namespace) -> int:
    """Print the tables; optionally plot, compare with the CPU benchmark and write JSON."""
    from lowbit.costmodel.calibrate import calibrate_cpu

    model = get_model(args.model)
    hws, cal = resolve_hardware(args.hardware, quick=args.quick)
    out: dict[str, object] = {"model": model.name}
    tables = {
        "hardware": ("Hardware presets", hardware_table(hws)),
        "linear": (
            f"{model.name}: one layer's linear layers, dequant vs MSD [inferred model]",
            linear_table(hws, model, ms=args.ms),
        ),
        "kv_bytes": ("Bytes per KV element in decode (msd.md §10)", kv_bytes_table()),
        "attention": (
            f"{model.name}: decode attention per layer over an INT8 KV cache ({model.attention.name})",
            attention_table(hws, model, seqs=args.seqs),
        ),
    }
    for key, (title, (header, rows)) in tables.items():
        print_rich_table(title, header, rows, digits=4)
        out[key] = {"header": header, "rows": rows}
    if args.compare_cpu:
        cal = cal or calibrate_cpu(quick=args.quick)
        out["cpu_check"] = compare_with_stored(cal, args.results, args.msd_linear)
        out["calibration"] = cal.as_dict()
    if args.plot is not None:
        from lowbit.costmodel.plots import latency_figure, save_figure

        save_figure(latency_figure(model, hws, ms=args.ms, seqs=args.seqs), args.plot)
        print(f"plot written to {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


def compare_with_stored(cal: CpuCalibration, results: Path | None, msd_linear: Path | None) -> dict[str, Any] | str:
    """Print this CPU's predicted vs the stored measured MSD speedups, saying which machine measured them.

    The timings come from ``msd_linear`` when given, else from ``msd_linear.json`` in ``results`` (None: the copy
    packaged with lowbit). Returns the JSON form of the check, or ``NOT_MEASURED`` when there are no timings.
    """
    from lowbit.costmodel.cpu_check import NOT_MEASURED, CpuComparison, compare_cpu, load_benchmark, measured_rows
    from lowbit.lab.report.machine import cpu_model
    from lowbit.lab.report.stored import machine_caveat, results_source

    if msd_linear is not None:
        path, where = msd_linear, str(msd_linear)
    else:
        source = results_source(results)
        path, where = source.file(MSD_LINEAR), f"{MSD_LINEAR} in {source.describe()}"
    data = load_benchmark(path)
    if data is None:
        print(
            f"CPU predicted vs measured: {NOT_MEASURED} ({path} does not exist; run benchmarks/bench_msd_linear.py "
            "in a lowbit checkout and pass its folder with --results)"
        )
        return NOT_MEASURED
    comparable, caveat = machine_caveat(data, cpu_model())
    rows = [c.cells() for c in compare_cpu(cal, measured_rows(data, path))]
    title = "CPU: predicted (this CPU, calibrated now) vs measured MSD speedup over dequant (W8A16)"
    print_rich_table(title if comparable else f"{title} — NOT COMPARABLE", CpuComparison.HEADER, rows, digits=4)
    print(f"Measured timings: {where}, written {data.get('written', '?')}. {caveat}")
    return {
        "header": list(CpuComparison.HEADER),
        "rows": rows,
        "measured_file": str(path),
        "measured_on": (data.get("machine") or {}).get("cpu"),
        "this_cpu": cpu_model(),
        "comparable": comparable,
        "caveat": caveat,
    }
