"""``lowbit cost-check``: calibrate this CPU, cost the model on it and check predicted vs measured MSD speedups.

The study half of ``lowbit cost`` (:mod:`lowbit.costmodel.command`, whose options ``--model``, ``--ms``,
``--seqs``, ``--plot`` and ``--json`` it shares): ``cpu`` in ``--hardware`` is this CPU calibrated now
(:func:`lowbit.lab.costmodel.calibrate.calibrate_cpu`), and the calibrated model's speedups are put next to the
timings of the MSDLinear benchmark (``msd_linear.json`` of ``--results``, or ``--msd-linear``). Timings measured
on another machine are flagged as not comparable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowbit.cli_tables import print_rich_table
from lowbit.costmodel.command import CPU, add_model_options, print_tables, resolve_hardware, write_outputs
from lowbit.costmodel.hardware import PRESETS, Hardware
from lowbit.costmodel.models import get_model

if TYPE_CHECKING:
    from lowbit.lab.costmodel.calibrate import CpuCalibration

MSD_LINEAR = "msd_linear.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lowbit cost-check``."""
    p = subparsers.add_parser(
        "cost-check",
        help="calibrate this CPU and check the cost model's MSD speedup against measured timings",
        description="Calibrates this CPU (GEMM throughput per path and M, bandwidth, dequant and decomposition "
        "rates), prints `lowbit cost`'s tables with the calibrated CPU as a device, and compares the predicted "
        "MSD speedup over BF16 dequant with the MSDLinear benchmark's measured one (msd_linear.json).",
    )
    p.add_argument(
        "--hardware",
        default=CPU,
        metavar="NAME,...",
        help=f"devices of the tables, comma-separated: 'cpu' (this CPU, calibrated now), presets "
        f"({', '.join(sorted(PRESETS))}) or .toml files (default cpu); the comparison always uses the "
        "calibrated CPU",
    )
    add_model_options(p)
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
        help="MSDLinear benchmark results file (overrides --results)",
    )
    p.add_argument("--quick", action="store_true", help="quick CPU calibration (fewer sizes and repeats, seconds)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the tables, compare with the stored benchmark; optionally plot and write JSON."""
    from lowbit.lab.costmodel.calibrate import calibrate_cpu
    from lowbit.lab.report.stored import results_source

    model = get_model(args.model)
    if args.msd_linear is None:
        results_source(args.results)  # a bad --results fails before the calibration, not after it
    calibration: list[CpuCalibration] = []

    def cpu() -> Hardware:
        calibration.append(calibrate_cpu(quick=args.quick))
        return calibration[-1].to_hardware()

    hws = resolve_hardware(args.hardware, cpu=cpu)
    out = print_tables(model, hws, ms=args.ms, seqs=args.seqs)
    cal = calibration[-1] if calibration else calibrate_cpu(quick=args.quick)
    out["cpu_check"] = compare_with_stored(cal, args.results, args.msd_linear)
    out["calibration"] = cal.as_dict()
    write_outputs(out, args, model, hws)
    return 0


def compare_with_stored(cal: CpuCalibration, results: Path | None, msd_linear: Path | None) -> dict[str, Any] | str:
    """Print this CPU's predicted vs the stored measured MSD speedups, saying which machine measured them.

    The timings come from ``msd_linear`` when given, else from ``msd_linear.json`` in ``results`` (None: the copy
    packaged with lowbit). Returns the JSON form of the check, or ``NOT_MEASURED`` when there are no timings.
    """
    from lowbit.lab.costmodel.cpu_check import NOT_MEASURED, CpuComparison, compare_cpu, load_benchmark, measured_rows
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
