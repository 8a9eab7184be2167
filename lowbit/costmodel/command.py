"""``lowbit cost``: the latency/HBM-traffic model's tables (and plots) for a named model shape."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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

DEFAULT_MSD_LINEAR = Path("benchmarks/results/msd_linear.json")


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
        help="calibrate this CPU and compare predicted vs measured MSD speedup (msd_linear.json)",
    )
    p.add_argument("--msd-linear", type=Path, default=DEFAULT_MSD_LINEAR, help="MSDLinear benchmark results")
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
    from lowbit.costmodel.cpu_check import NOT_MEASURED, CpuComparison, compare_cpu, load_measured

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
        measured = load_measured(args.msd_linear)
        if measured is None:
            print(
                f"CPU predicted vs measured: {NOT_MEASURED} ({args.msd_linear} does not exist; run "
                "benchmarks/bench_msd_linear.py)"
            )
            out["cpu_check"] = NOT_MEASURED
        else:
            comp = compare_cpu(cal, measured)
            rows = [c.cells() for c in comp]
            print_rich_table(
                "CPU: predicted vs measured MSD speedup over dequant (W8A16)", CpuComparison.HEADER, rows, digits=4
            )
            out["cpu_check"] = {"header": list(CpuComparison.HEADER), "rows": rows}
        out["calibration"] = cal.as_dict()
    if args.plot is not None:
        from lowbit.costmodel.plots import latency_figure, save_figure

        save_figure(latency_figure(model, hws, ms=args.ms, seqs=args.seqs), args.plot)
        print(f"plot written to {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0
